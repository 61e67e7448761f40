"""Audio augmentations for the `augment:` list, on whole batches on the device (a few tensor ops each).

Waveform ops (time_shift, gain, noise, speed) act on (N, samples) batches before the model, like image ops.
SpecAugment's masks (time_mask, freq_mask) act on the spectrogram, which lives inside the model, so
they run as a forward hook on its front-end layer, in training mode only: evaluation and export never
see them. All randomness comes from torch's global RNG.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from dlforge.config.components import Component
from dlforge.data.augment_ops import AUGMENTATIONS, OpParams, PositiveRange, Probability

Shape = tuple[int, ...]


def _chosen(n: int, p: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) < p


class AudioOp(OpParams):
    modality: ClassVar[str] = "audio"


# --- waveform ops: (N, samples) --------------------------------------------------------------


class TimeShift(nn.Module):
    def __init__(self, max_fraction: float, p: float) -> None:
        super().__init__()
        self.max_fraction, self.p = max_fraction, p

    def forward(self, x: Tensor) -> Tensor:
        n, length = x.shape
        limit = int(self.max_fraction * length)
        shift = torch.randint(-limit, limit + 1, (n, 1), device=x.device) * _chosen(n, self.p, x.device)[:, None]
        source = torch.arange(length, device=x.device)[None, :] - shift  # zeros come in at the edge
        inside = (source >= 0) & (source < length)
        return torch.where(inside, x.gather(1, source.clamp(0, length - 1)), torch.zeros_like(x))


class TimeShiftParams(AudioOp):
    max_fraction: float = Field(0.1, gt=0, lt=1, description="largest shift, fraction of the clip, either way")
    p: Probability = 1.0

    def build(self, shape: Shape) -> nn.Module:
        return TimeShift(self.max_fraction, self.p)


class Gain(nn.Module):
    def __init__(self, db: tuple[float, float], p: float) -> None:
        super().__init__()
        self.db, self.p = db, p

    def forward(self, x: Tensor) -> Tensor:
        db = torch.empty(x.shape[0], 1, device=x.device).uniform_(*self.db)
        return x * torch.where(_chosen(x.shape[0], self.p, x.device)[:, None], 10 ** (db / 20), 1.0)


class GainParams(AudioOp):
    db: tuple[float, float] = Field((-6.0, 6.0), description="gain in dB drawn from [min, max]")
    p: Probability = 1.0

    def build(self, shape: Shape) -> nn.Module:
        return Gain(self.db, self.p)


class NoiseAtSnr(nn.Module):
    def __init__(self, snr_db: tuple[float, float], p: float) -> None:
        super().__init__()
        self.snr_db, self.p = snr_db, p

    def forward(self, x: Tensor) -> Tensor:
        rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()
        snr = torch.empty(x.shape[0], 1, device=x.device).uniform_(*self.snr_db)
        scale = rms * 10 ** (-snr / 20) * _chosen(x.shape[0], self.p, x.device)[:, None]
        return x + torch.randn_like(x) * scale


class NoiseParams(AudioOp):
    snr_db: tuple[float, float] = Field((10.0, 30.0), description="signal-to-noise ratio in dB from [min, max]")
    p: Probability = 0.5

    def build(self, shape: Shape) -> nn.Module:
        return NoiseAtSnr(self.snr_db, self.p)


class Speed(nn.Module):
    def __init__(self, factor: tuple[float, float], p: float) -> None:
        super().__init__()
        self.factor, self.p = factor, p

    def forward(self, x: Tensor) -> Tensor:
        n, length = x.shape
        factor = torch.empty(n, 1, device=x.device).uniform_(*self.factor)
        factor = torch.where(_chosen(n, self.p, x.device)[:, None], factor, 1.0)
        centre = (length - 1) / 2  # the clip is stretched about its centre, where the word usually is
        source = (torch.arange(length, device=x.device)[None, :] - centre) * factor + centre
        left = source.floor()
        frac, left_i = source - left, left.long()

        def at(i: Tensor) -> Tensor:
            inside = (i >= 0) & (i < length)
            return torch.where(inside, x.gather(1, i.clamp(0, length - 1)), torch.zeros_like(x))

        return at(left_i) * (1 - frac) + at(left_i + 1) * frac  # linear interpolation, zeros beyond the ends


class SpeedParams(AudioOp):
    """Speed perturbation: play each clip `factor` times faster, so pitch and formants (the vocal tract's
    size) scale by it and the duration by its inverse: speakers between and beyond the training voices.
    Linear interpolation without an anti-alias filter (a factor above 1 folds a little of the top band)."""

    factor: PositiveRange = Field((0.85, 1.15), description="speed factor drawn from [min, max]")
    p: Probability = 1.0

    def build(self, shape: Shape) -> nn.Module:
        return Speed(self.factor, self.p)


# --- SpecAugment masks: (N, 1, bins, frames), inside the model -------------------------------


class SpecMask(nn.Module):
    """`count` bands of up to `width` rows (axis 2) or columns (axis 3), filled with each sample's mean."""

    def __init__(self, axis: int, width: int, count: int, p: float) -> None:
        super().__init__()
        self.axis, self.width, self.count, self.p = axis, width, count, p

    def forward(self, spec: Tensor) -> Tensor:
        n, size = spec.shape[0], spec.shape[self.axis]
        width = torch.randint(0, min(self.width, size) + 1, (n, self.count, 1), device=spec.device)
        start = (torch.rand(n, self.count, 1, device=spec.device) * (size - width + 1)).long()
        pos = torch.arange(size, device=spec.device)
        masked = ((pos >= start) & (pos < start + width)).any(dim=1) & _chosen(n, self.p, spec.device)[:, None]
        shape = (n, 1, size, 1) if self.axis == 2 else (n, 1, 1, size)
        return torch.where(masked.view(shape), spec.mean(dim=(2, 3), keepdim=True), spec)


class TimeMaskParams(AudioOp):
    masks_spectrogram: ClassVar[bool] = True
    max_frames: int = Field(10, ge=1, description="widest mask in frames")
    count: int = Field(2, ge=1, description="masks per clip")
    p: Probability = 1.0

    def build(self, shape: Shape) -> nn.Module:
        return SpecMask(3, self.max_frames, self.count, self.p)


class FreqMaskParams(AudioOp):
    masks_spectrogram: ClassVar[bool] = True
    max_bins: int = Field(6, ge=1, description="widest mask in mel bins (or MFCCs)")
    count: int = Field(2, ge=1, description="masks per clip")
    p: Probability = 1.0

    def build(self, shape: Shape) -> nn.Module:
        return SpecMask(2, self.max_bins, self.count, self.p)


def attach_spectrogram_masks(masks: list[nn.Module], net: nn.Module) -> Any:
    """Hook `masks` onto the model's front-end (training mode only); returns the hook handle."""
    frontend = next((m for m in net.modules() if getattr(m, "is_frontend", False)), None)
    if frontend is None:
        return None
    chain = nn.Sequential(*masks)

    def apply(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        return chain(output) if module.training else None

    return frontend.register_forward_hook(apply)


_CATALOG: list[tuple[str, type[AudioOp], str | None, str]] = [
    ("time_shift", TimeShiftParams, "max_fraction", "audio: shift the waveform, zeros in at the edge"),
    ("gain", GainParams, "db", "audio: scale the waveform by a gain in dB"),
    ("noise", NoiseParams, "snr_db", "audio: add white noise at a signal-to-noise ratio in dB"),
    ("speed", SpeedParams, "factor", "audio: speed perturbation, pitch and formants × factor"),
    ("time_mask", TimeMaskParams, "max_frames", "audio: SpecAugment time masks on the model's spectrogram"),
    ("freq_mask", FreqMaskParams, "max_bins", "audio: SpecAugment frequency masks on the model's spectrogram"),
]
for _name, _params, _primary, _doc in _CATALOG:
    AUGMENTATIONS.add(_name, Component(_params, _params.build, _primary, _doc))
