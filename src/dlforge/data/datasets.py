"""The dataset registry: `digits` (built in), `image_folder` (user images), `synthetic` (tests, benchmarks).

A dataset gives float inputs scaled to [0, 1] (normalisation happens inside the model, from train-split
statistics) or int64 token ids, and int64 class indices. Small built-in sets are tensors in memory;
files are read lazily, one sample when a loader asks for it (dlforge.data.samples), so a dataset may be
far larger than memory. Labels (and groups) are always known up front: splits need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from dlforge.data.errors import DataError
from dlforge.data.samples import FileSamples, sample_rng
from dlforge.imagedecode import SUFFIXES, Fit, ImageError, RandomCrop, decode_image
from dlforge.preprocessing import ImagePreprocessing, Preprocessing, TensorPreprocessing, TokensPreprocessing
from dlforge.registry import Registry

if TYPE_CHECKING:
    from dlforge.data.tables import TextColumn

log = logging.getLogger(__name__)


__all__ = ["DATASETS", "DataError", "DatasetEntry", "Params", "RawData"]


@dataclass
class RawData:
    """A whole dataset before splitting: in memory (`x`), or read lazily (`samples`, with `x` empty)."""

    x: Tensor
    y: Tensor
    labels: list[str]
    preprocessing: Preprocessing | None = None  # None: plain tensors or token ids (splits.make_bundle)
    skipped: list[str] = field(default_factory=list)  # unreadable files, by path
    texts: TextColumn | None = None  # text datasets: raw strings (Arrow), tokenized after the split (data/text.py)
    tokenizer: Any = None  # their dlforge.text.TokenizerConfig
    artifacts: dict[str, bytes] = field(default_factory=dict)  # files runs and packages keep (tokenizer.json)
    groups: list[str] | None = None  # e.g. the speaker of each sample: splits keep a group together
    samples: Dataset[Any] | None = None  # lazy: sample i → (input, y[i]), decoded when a loader asks
    sample_shape: tuple[int, ...] | None = None  # one lazy sample's shape
    sample_dtype: torch.dtype = torch.float32
    keys: Sequence[str] | None = None  # a stable name per sample (its file), for data.split: hash
    given_split: np.ndarray | None = None  # per sample 0 train, 1 val, 2 test, from split folders (-1: carve)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.sample_shape if self.samples is not None and self.sample_shape else tuple(self.x.shape[1:])

    @property
    def integer_input(self) -> bool:
        return not (self.sample_dtype if self.samples is not None else self.x.dtype).is_floating_point

    def dataset(self) -> Dataset[Any]:
        """Every sample as a map-style dataset of (input, label)."""
        return self.samples if self.samples is not None else TensorDataset(self.x, self.y)


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


class TrainCrop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: tuple[float, float] = Field((0.08, 1.0), description="share of the image's area a crop covers")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="aspect ratios (width / height) of crops")

    @model_validator(mode="after")
    def _ranges(self) -> TrainCrop:
        if not (0 < self.scale[0] <= self.scale[1] <= 1 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError("scale needs 0 < low <= high <= 1 and ratio 0 < low <= high, e.g. "
                             "{scale: [0.35, 1], ratio: [0.75, 1.33]}")
        return self


class ImageSettings(Params):
    """How an image file becomes a model input (image_folder, shards of images)."""

    image_size: tuple[int, int] = Field((32, 32), description="(height, width) after resizing")
    channels: Literal[1, 3] = 3
    resize: Fit = Field("stretch", description="how an image becomes image_size for evaluation and serving: "
                                               "stretch the whole image, or center_crop (keeps the aspect ratio)")
    train_crop: TrainCrop | None = Field(None, description="training only: a random-resized crop of the "
                                                           "original image each epoch, e.g. {scale: [0.35, 1]}")

    def reader(self, seed: int) -> ImageReader:
        crop = RandomCrop(self.train_crop.scale, self.train_crop.ratio) if self.train_crop else None
        return ImageReader(self.image_size, self.channels, self.resize, crop, seed)

    def preprocessing(self) -> ImagePreprocessing:
        """8-bit images to [0, 1], brought to image_size by `resize` (mean/std come later, from the train split)."""
        return ImagePreprocessing(size=self.image_size, channels=self.channels, resize=self.resize,
                                  channel_order="L" if self.channels == 1 else "RGB", scale=1 / 255)


class ImageFolderParams(ImageSettings):
    path: Path
    skip_unreadable: bool = Field(True, description="a file that cannot be decoded is replaced by the next "
                                                    "one, with a warning naming it (false: stop with an error)")


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode, convert and resize one image to float32 (C, H, W) in [0, 1] (the decoder serving uses too)."""
    return decode_image(path, size, channels)


@dataclass(frozen=True)
class ImageReader:
    """One image (a file, or its bytes from a shard) → the model's input (a picklable callable: loader
    workers may be spawned).

    Evaluation (`draw` None) resizes by `fit`; training with `crop` takes a random-resized crop of the
    original, drawn from (seed, sample, epoch). `name`: what messages call a source given as bytes."""

    size: tuple[int, int]
    channels: int
    fit: Fit = "stretch"
    crop: RandomCrop | None = None
    seed: int = 0

    def __call__(self, source: Path | bytes, index: int, draw: int | None, name: str = "") -> np.ndarray:
        if self.crop is not None and draw is not None:
            return decode_image(source, self.size, self.channels, crop=self.crop,
                                rng=sample_rng(self.seed, index, draw), name=name)
        return decode_image(source, self.size, self.channels, fit=self.fit, name=name)


def list_class_files(root: Path, suffixes: tuple[str, ...], what: str, key: str = "data.params.path",
                     ) -> tuple[list[str], list[str], list[int]]:
    """(class names, files relative to `root`, class index of each) of a root/<class>/<file> folder, sorted.

    Only names are listed (os.scandir, no stat per file), so 100k files take about a second. `key`: what
    messages blame (the config key, or a command's argument)."""
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a folder (expected one sub-folder per class)")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{key}: {root} needs at least 2 class sub-folders, found {classes}")
    files, targets = [], []
    for index, name in enumerate(classes):
        found = sorted(e.name for e in os.scandir(root / name)
                       if e.name.lower().endswith(suffixes) and not e.name.startswith(".") and e.is_file())
        files += [f"{name}/{f}" for f in found]
        targets += [index] * len(found)
    if not files:
        raise DataError(f"{key}: no {what} under {root} ({', '.join(suffixes)})")
    return classes, files, targets


SPLIT_FOLDERS = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def split_folders(root: Path) -> list[str]:
    """The split sub-folders of a root/{train,val,test}/<class>/<file> layout, or [] for root/<class>/<file>."""
    if not (root / "train").is_dir():
        return []
    names = {d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith(".")}
    return sorted(names, key=lambda n: SPLIT_FOLDERS[n]) if names <= set(SPLIT_FOLDERS) else []


def list_samples(root: Path, suffixes: tuple[str, ...], what: str, key: str = "data.params.path",
                 ) -> tuple[list[str], list[str], list[int], np.ndarray | None]:
    """`list_class_files`, or for split folders (train/ and val/ and/or test/, each with the same class
    folders) every split's files with the split of each: (classes, files, targets, split per file or None)."""
    splits = split_folders(root)
    if not splits:
        return (*list_class_files(root, suffixes, what, key), None)
    listed = {name: list_class_files(root / name, suffixes, what, key) for name in splits}
    classes = listed["train"][0]
    files, targets, split_of = [], [], []
    for name, (names, found, indices) in listed.items():
        if names != classes:
            raise DataError(f"{key}: {root / name} has the classes {names}, but {root / 'train'} has "
                            f"{classes}; every split folder needs the same class folders")
        files += [f"{name}/{f}" for f in found]
        targets += indices
        split_of += [SPLIT_FOLDERS[name]] * len(found)
    return classes, files, targets, np.array(split_of, dtype=np.int8)


def load_image_folder(p: ImageFolderParams, seed: int) -> RawData:
    """The folder's file list; each image is decoded and resized when a loader asks for it."""
    root = p.path.expanduser()
    classes, files, targets, given_split = list_samples(root, IMAGE_SUFFIXES, "images")
    samples = FileSamples(root, files, targets, p.reader(seed), (ImageError,), p.skip_unreadable)
    return RawData(torch.empty(0), torch.tensor(targets), classes, p.preprocessing(), samples=samples,
                   sample_shape=(p.channels, *p.image_size), keys=files, given_split=given_split)


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
