"""Batched, on-device data augmentation built from the experiment's `augment:` list.

Each entry names a registered op (`- hflip: 0.5`, `- rotate: 15`, `- cutmix: {alpha: 1.0}`).
Ops run on the whole batch after it reaches the device, so augmentation costs one kernel per op
instead of one Python call per image in the DataLoader workers. Images are in [0, 1] and not yet
normalized (the model normalizes), so color ops see real colors. All randomness comes from torch's
global RNG: `torch.manual_seed` makes a batch reproducible.

Label-mixing ops (mixup, cutmix) run last and turn the int64 class indices into soft targets
(N, num_classes); `torch.nn.functional.cross_entropy` accepts both forms.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlforge.config.components import resolve
from dlforge.config.errors import ConfigError
from dlforge.config.schema import ComponentSpec
from dlforge.data import augment_audio
from dlforge.data.augment_ops import AUGMENTATIONS, OpParams

__all__ = ["AUGMENTATIONS", "BatchAugmenter", "build_augmenter", "validate_augment"]

# Augmentation runs on training batches only: a normalize op there would train on inputs the model never sees.
NOT_AN_AUGMENTATION = (
    "normalize is not an augmentation in dlforge: the model normalises its inputs itself, with the train "
    "split's per-channel mean/std (exported models take raw [0, 1] inputs), and augmentations run on "
    "training batches only, so this would train on inputs the model never sees at test time; remove it"
)


# --- the pipeline ----------------------------------------------------------------------------


class BatchAugmenter(nn.Module):
    """Input ops (images or waveforms) in order, then label-mixing ops; built by `build_augmenter`.
    SpecAugment masks are held here but run inside the model (see `attach`).

    Returns `y` unchanged (int64) when the pipeline has no label-mixing op, otherwise float soft
    targets (N, num_classes) for every batch: the target form depends on the config, not on luck.
    """

    def __init__(self, image_ops: list[nn.Module], mixers: list[nn.Module], num_classes: int,
                 spectrogram_masks: list[nn.Module] | None = None):
        super().__init__()
        self.image_ops = nn.Sequential(*image_ops)
        self.mixers = nn.ModuleList(mixers)
        self.num_classes = num_classes
        self.spectrogram_masks = nn.ModuleList(spectrogram_masks or [])

    def attach(self, net: nn.Module) -> None:
        """Hook the SpecAugment masks onto `net`'s front-end layer (they act inside the model)."""
        if self.spectrogram_masks and augment_audio.attach_spectrogram_masks(list(self.spectrogram_masks), net) is None:
            raise ConfigError(["augment: time_mask/freq_mask mask the model's spectrogram, but the model has no "
                               "melspectrogram or mfcc layer; add one first or remove the masks"])

    @property
    def mixes_labels(self) -> bool:
        return len(self.mixers) > 0

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self.image_ops(x)
        if not self.mixers:
            return x, y
        targets = F.one_hot(y, self.num_classes).float()
        for mixer in self.mixers:
            x, targets = mixer(x, targets)
        return x, targets


MODALITIES = {3: "image", 1: "audio"}  # input rank → the ops that fit


def _resolve_all(specs: list[ComponentSpec], input_shape: tuple[int, ...]) -> list[OpParams]:
    """Every op's validated settings, or one ConfigError listing every problem."""
    modality = MODALITIES.get(len(input_shape))
    if specs and modality is None:
        why = f"augmentations need images (C, H, W) or waveforms (samples,) but the input shape is {input_shape}"
        raise ConfigError([f"augment[0]: {why}; remove the augment section for this dataset"])
    shape = tuple(input_shape)
    resolved: list[tuple[int, str, OpParams]] = []
    problems: list[str] = []
    for i, spec in enumerate(specs):
        path = f"augment[{i}]"
        if spec.type == "normalize":
            problems.append(f"{path}: {NOT_AN_AUGMENTATION}")
            continue
        try:
            params = cast(OpParams, resolve(AUGMENTATIONS, spec, path)[1])
        except ConfigError as exc:
            problems += exc.problems
            continue
        if params.modality != modality:
            inputs = {"image": "images", "audio": "waveforms"}[modality or "image"]
            problems.append(f"{path}: {spec.type} is an {params.modality} augmentation, but the inputs are "
                            f"{inputs} of shape {shape}; see `dlforge augmentations`")
            continue
        problems += [f"{path}.{field}: {text}" for field, text in params.problems(shape)]  # type: ignore[arg-type]
        resolved.append((i, spec.type, params))
    problems += _order_problems(resolved)
    if problems:
        raise ConfigError(problems)
    return [params for _, _, params in resolved]


def _order_problems(ops: list[tuple[int, str, OpParams]]) -> list[str]:
    """Label-mixing ops change the targets, so no image op may follow them."""
    last = max(((i, name) for i, name, p in ops if not p.mixes_labels), default=(-1, ""))
    return [
        f"augment[{i}]: {name} mixes labels, so it must come after every image op; "
        f"move it below augment[{last[0]}] ({last[1]})"
        for i, name, p in ops
        if p.mixes_labels and i < last[0]
    ]


def validate_augment(specs: list[ComponentSpec], input_shape: tuple[int, ...]) -> None:
    """Check the `augment:` list against the input shape (C, H, W) or (samples,); ConfigError names
    `augment[i].<param>` for each problem."""
    _resolve_all(specs, input_shape)


def build_augmenter(
    specs: list[ComponentSpec], input_shape: tuple[int, ...], num_classes: int, integer_input: bool = False
) -> BatchAugmenter | None:
    """The batch pipeline for `specs`, or None when there is nothing to do.

    Token ids have the rank of waveforms, so `integer_input` tells them apart: they take no augmentation."""
    if not specs:
        return None
    if integer_input:
        raise ConfigError([f"augment[0]: augmentations need images (C, H, W) or waveforms (samples,) but the inputs "
                           f"are token ids of shape {tuple(input_shape)}; remove the augment section for this dataset"])
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    shape = tuple(input_shape)
    image_ops: list[nn.Module] = []
    mixers: list[nn.Module] = []
    masks: list[nn.Module] = []
    for params in _resolve_all(specs, input_shape):
        kind = mixers if params.mixes_labels else masks if params.masks_spectrogram else image_ops
        kind.append(params.build(shape))  # type: ignore[arg-type]
    return BatchAugmenter(image_ops, mixers, num_classes, masks)
