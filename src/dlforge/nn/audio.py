"""Audio front-end layers that live inside the model: raw waveform (samples,) → (1, mels, frames).

Like input normalisation, the front-end is part of the network, so an exported model takes raw
waveforms and its features can never drift from training. The short-time Fourier transform is a
fixed-basis `conv1d` by default (`stft: conv`) or torch.stft (`stft: onnx`, exported as ONNX's STFT
op); `benchmarks/bench_audio.py` measures both in ONNX Runtime. Filterbanks are computed once, from
the settings (non-persistent buffers: the weights file holds no derived constants).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from dlforge.config.components import Component
from dlforge.nn.layers import LAYERS, LayerShapeError, Params, Shape

FRONTENDS = ("melspectrogram", "mfcc")


class MelParams(Params):
    sample_rate: int = Field(16000, ge=1000, description="Hz; must equal the data's sample_rate")
    n_fft: int = Field(512, ge=16, le=16384, description="FFT window (samples)")
    hop: int = Field(160, ge=1, description="samples between frames")
    n_mels: int = Field(40, ge=1, le=512)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0, description="default: sample_rate / 2")
    log: bool = Field(True, description="log(mel + eps)")
    eps: float = Field(1e-6, gt=0)
    normalize: bool = Field(False, description="per-clip mean/variance normalisation of the output (CMVN): "
                                               "invariant to gain and channel")
    stft: Literal["conv", "onnx"] = Field("conv", description="conv: fixed DFT as conv1d; onnx: torch.stft")

    @model_validator(mode="after")
    def _bands_fit(self) -> MelParams:
        top = self.f_max or self.sample_rate / 2
        if not self.f_min < top <= self.sample_rate / 2:
            raise ValueError(f"need f_min < f_max <= sample_rate/2 = {self.sample_rate / 2:g} Hz")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels {self.n_mels} exceeds the {self.n_fft // 2 + 1} FFT bins of n_fft {self.n_fft}")
        return self


class MfccParams(MelParams):
    n_mfcc: int = Field(20, ge=1, description="cepstral coefficients kept (<= n_mels)")

    @model_validator(mode="after")
    def _fewer_than_mels(self) -> MfccParams:
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc {self.n_mfcc} must be <= n_mels {self.n_mels}")
        if not self.log:
            raise ValueError("mfcc needs log: true (cepstra are the DCT of the log-mel spectrum)")
        return self


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale, (n_fft // 2 + 1, n_mels): torchaudio's melscale_fbanks."""
    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    mels = np.linspace(to_mel(np.array(f_min)), to_mel(np.array(f_max)), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    rising = (freqs[:, None] - hz[None, :-2]) / (hz[1:-1] - hz[:-2])
    falling = (hz[None, 2:] - freqs[:, None]) / (hz[2:] - hz[1:-1])
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dft_basis(n_fft: int, window: Tensor) -> Tensor:
    """Windowed cos and -sin rows for the one-sided DFT, as a conv1d weight (2 * bins, 1, n_fft)."""
    bins = n_fft // 2 + 1
    angle = 2 * math.pi * torch.outer(torch.arange(bins, dtype=torch.float64), torch.arange(n_fft, dtype=torch.float64))
    basis = torch.cat([torch.cos(angle / n_fft), -torch.sin(angle / n_fft)]) * window.double()
    return basis.float().unsqueeze(1)


class MelSpectrogram(nn.Module):
    """(N, samples) or (N, 1, samples) waveforms → (N, 1, n_mels, frames) (log-)mel power spectrograms."""

    is_frontend = True  # augmentations that mask spectrograms hook here (dlforge.data.augment_audio)

    def __init__(self, p: MelParams) -> None:
        super().__init__()
        self.n_fft, self.hop, self.log, self.eps, self.stft = p.n_fft, p.hop, p.log, p.eps, p.stft
        self.normalize = p.normalize
        window = torch.hann_window(p.n_fft, periodic=True)
        filters = mel_filters(p.sample_rate, p.n_fft, p.n_mels, p.f_min, p.f_max or p.sample_rate / 2)
        self.window: Tensor
        self.basis: Tensor
        self.filters: Tensor
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("basis", dft_basis(p.n_fft, window) if p.stft == "conv" else torch.zeros(0),
                             persistent=False)
        self.register_buffer("filters", torch.from_numpy(filters.T.copy()), persistent=False)  # (mels, bins)

    def power(self, x: Tensor) -> Tensor:
        """|STFT|² (N, bins, frames), frames centred on multiples of `hop` (zero padding at the ends)."""
        x = F.pad(x.reshape(x.shape[0], 1, x.shape[-1]), (self.n_fft // 2, self.n_fft // 2))
        if self.stft == "conv":
            real, imag = F.conv1d(x, self.basis, stride=self.hop).chunk(2, dim=1)
            return real * real + imag * imag
        spec = torch.stft(x[:, 0], self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        return torch.view_as_real(spec).pow(2).sum(-1)

    def features(self, x: Tensor) -> Tensor:
        """(N, n_mels, frames) (log-)mel power."""
        mel = torch.matmul(self.filters, self.power(x))
        return torch.log(mel + self.eps) if self.log else mel

    def forward(self, x: Tensor) -> Tensor:
        return _cmvn(self.features(x), self.normalize).unsqueeze(1)


class Mfcc(MelSpectrogram):
    """(N, samples) → (N, 1, n_mfcc, frames): the orthonormal DCT-II of the log-mel spectrogram."""

    def __init__(self, p: MfccParams) -> None:
        super().__init__(p)
        from scipy.fft import dct

        self.dct: Tensor
        basis = dct(np.eye(p.n_mels), type=2, norm="ortho", axis=0)[: p.n_mfcc].astype(np.float32)
        self.register_buffer("dct", torch.from_numpy(basis), persistent=False)  # (n_mfcc, mels)

    def forward(self, x: Tensor) -> Tensor:
        return _cmvn(torch.matmul(self.dct, self.features(x)), self.normalize).unsqueeze(1)


def _cmvn(features: Tensor, normalize: bool) -> Tensor:
    """Per-clip mean/variance normalisation over all bins and frames."""
    if not normalize:
        return features
    mean = features.mean(dim=(1, 2), keepdim=True)
    std = (features - mean).pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    return (features - mean) / (std + 1e-5)


def _check_waveform(name: str, p: MelParams, shape: Shape) -> None:
    if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        raise LayerShapeError(f"{name} expects a mono waveform (samples,) but got {shape}; "
                              f"put it first, on an audio_folder dataset")
    if shape[-1] < p.n_fft // 2 + 1:
        raise LayerShapeError(f"{name}: {shape[-1]} samples are fewer than n_fft/2 + 1 = {p.n_fft // 2 + 1}")


def melspectrogram(p: MelParams, shape: Shape) -> nn.Module:
    _check_waveform("melspectrogram", p, shape)
    return MelSpectrogram(p)


def mfcc(p: MfccParams, shape: Shape) -> nn.Module:
    _check_waveform("mfcc", p, shape)
    return Mfcc(p)


def frontend_rate(layers: list[Any]) -> int | None:
    """The sample_rate a layer list's front-end expects (first layer only), or None without one."""
    if layers and getattr(layers[0], "type", None) in FRONTENDS:
        return int(layers[0].params.get("sample_rate", MelParams.model_fields["sample_rate"].default))
    return None


LAYERS.add("melspectrogram", Component(MelParams, melspectrogram, None,
                                       "waveform → (1, n_mels, frames) log-mel spectrogram, inside the model"))
LAYERS.add("mfcc", Component(MfccParams, mfcc, "n_mfcc", "waveform → (1, n_mfcc, frames) MFCCs, inside the model"))
