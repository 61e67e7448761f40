"""The dataset registry: `digits` (built in), `image_folder` (user images), `synthetic` (tests, benchmarks).

Every dataset loads into memory as tensors: float inputs scaled to [0, 1] (normalisation happens
inside the model, from train-split statistics) or int64 token ids, and int64 class indices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from dlforge.errors import UserError
from dlforge.imagedecode import SUFFIXES, ImageError, decode_image
from dlforge.preprocessing import ImagePreprocessing, Preprocessing, TensorPreprocessing, TokensPreprocessing
from dlforge.registry import Registry

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """Data that cannot be loaded (missing folder, no images, too few samples per class)."""


@dataclass
class RawData:
    """A whole dataset in memory, before splitting."""

    x: Tensor
    y: Tensor
    labels: list[str]
    preprocessing: Preprocessing | None = None  # None: plain tensors or token ids (splits.make_bundle)
    skipped: list[str] = field(default_factory=list)  # unreadable files, by path
    texts: list[str] | None = None  # text datasets: raw strings, tokenized after the split (data/text.py)
    tokenizer: Any = None  # their dlforge.text.TokenizerConfig
    artifacts: dict[str, bytes] = field(default_factory=dict)  # files runs and packages keep (tokenizer.json)
    groups: list[str] | None = None  # e.g. the speaker of each sample: splits keep a group together

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def integer_input(self) -> bool:
        return not self.x.is_floating_point()


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class DatasetEntry:
    params: type[Params]
    load: Callable[[Any, int], RawData]
    doc: str
    shape: Callable[[Any], tuple[int, ...]]  # one sample's shape from the params alone
    tasks: tuple[str, ...] = ("classification",)  # the tasks whose data this is (checked at load)


DATASETS: Registry[DatasetEntry] = Registry("dataset", plugins="dlforge.datasets")


# --- digits: scikit-learn's 1,797 real 8x8 handwritten digits ---------------------------------
class DigitsParams(Params):
    pass


def load_digits_data(p: DigitsParams, seed: int) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    prep = ImagePreprocessing(size=(8, 8), channels=1, channel_order="L", scale=1 / 16,
                              note="pixel values 0..16 as in scikit-learn; 8-bit images are scaled by 16/255 first")
    return RawData(x, y, [str(i) for i in range(10)], prep)


# --- image_folder: root/<class>/<image> ------------------------------------------------------
IMAGE_SUFFIXES = SUFFIXES


class ImageFolderParams(Params):
    path: Path
    image_size: tuple[int, int] = Field((32, 32), description="(height, width) after resizing")
    channels: Literal[1, 3] = 3


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode, convert and resize one image to float32 (C, H, W) in [0, 1] (the decoder serving uses too)."""
    return decode_image(path, size, channels)


def load_image_folder(p: ImageFolderParams, seed: int) -> RawData:
    root = p.path.expanduser()
    if not root.is_dir():
        raise DataError(f"data.params.path: {root} is not a folder (expected one sub-folder per class)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"data.params.path: {root} needs at least 2 class sub-folders, found {classes}")
    images, targets, skipped = [], [], []
    for index, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                images.append(read_image(file, p.image_size, p.channels))
                targets.append(index)
            except ImageError as exc:
                skipped.append(str(exc))  # names the file
    for line in skipped:
        log.warning("skipped unreadable image %s", line)
    if not images:
        raise DataError(f"data.params.path: no readable images under {root} ({', '.join(IMAGE_SUFFIXES)})")
    prep = ImagePreprocessing(size=p.image_size, channels=p.channels,
                              channel_order="L" if p.channels == 1 else "RGB", scale=1 / 255)
    x = torch.from_numpy(np.stack(images))
    return RawData(x, torch.tensor(targets), classes, prep, skipped)


# --- synthetic: learnable random data of any shape ---------------------------------------------
class SyntheticParams(Params):
    shape: list[int] = Field([1, 8, 8], min_length=1, description="one sample's shape")
    num_classes: int = Field(4, ge=2)
    n_samples: int = Field(512, ge=16)
    kind: Literal["float", "tokens"] = "float"
    vocab_size: int = Field(32, ge=2, description="tokens only")
    noise: float = Field(0.5, ge=0)


def load_synthetic(p: SyntheticParams, seed: int) -> RawData:
    """Class c has its own random prototype; samples are prototype + noise (so models can learn)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(p.n_samples) % p.num_classes
    if p.kind == "tokens":
        weights = torch.rand(p.num_classes, p.vocab_size, generator=gen) ** 4
        x = torch.stack([torch.multinomial(weights[c], int(np.prod(p.shape)), True, generator=gen) for c in y])
        return RawData(x.reshape(p.n_samples, *p.shape), y, [f"class_{i}" for i in range(p.num_classes)],
                       TokensPreprocessing(vocab_size=p.vocab_size))
    protos = torch.rand(p.num_classes, *p.shape, generator=gen)
    x = (protos[y] + p.noise * torch.randn(p.n_samples, *p.shape, generator=gen)).clamp(0, 1)
    return RawData(x, y, [f"class_{i}" for i in range(p.num_classes)], TensorPreprocessing(shape=p.shape))


IMAGE_TASKS = ("classification", "gan", "denoise")  # labelled images serve all three
DATASETS.add("digits", DatasetEntry(DigitsParams, load_digits_data, "scikit-learn's 8x8 digits (1,797 images)",
                                    lambda p: (1, 8, 8), IMAGE_TASKS))
DATASETS.add("image_folder", DatasetEntry(ImageFolderParams, load_image_folder, "path/<class>/<image> files",
                                          lambda p: (p.channels, *p.image_size), IMAGE_TASKS))
DATASETS.add("synthetic", DatasetEntry(SyntheticParams, load_synthetic, "random learnable tensors",
                                       lambda p: tuple(p.shape)))
