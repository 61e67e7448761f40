"""Image quality metrics from torchmetrics: PSNR/SSIM for denoising, FID on a dlforge classifier's features.

FID with Inception features means nothing on 8x8 digits; a classifier trained by dlforge on the
same data is the meaningful feature space (torchmetrics accepts any module as the extractor).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance


def ssim_kernel(height: int, width: int) -> int:
    """The usual 11x11 gaussian window, shrunk to the largest odd size that fits small images."""
    size = min(11, height, width)
    return size if size % 2 else size - 1


def psnr_ssim(prediction: Tensor, target: Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM of images in [0, 1], averaged over the batch."""
    kernel = ssim_kernel(target.shape[-2], target.shape[-1])
    psnr = peak_signal_noise_ratio(prediction, target, data_range=1.0, reduction="elementwise_mean",
                                   dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(prediction, target, data_range=1.0, kernel_size=kernel)
    return {"psnr": float(psnr), "ssim": float(ssim)}  # type: ignore[arg-type]


class ClassifierFeatures(nn.Module):
    """The penultimate activations of a dlforge classifier (`Net`: normalize + layer stack)."""

    def __init__(self, classifier: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        body: Any = classifier.body
        self.normalize: nn.Module = classifier.normalize  # type: ignore[assignment]
        self.trunk: nn.Module = body[:-1]
        self.eval().requires_grad_(False)
        with torch.no_grad():
            probe = self.trunk(self.normalize(torch.zeros(2, *input_shape)))
        self.num_features = int(probe.flatten(1).shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(self.normalize(x)).flatten(1)


def frechet_distance(features: nn.Module, real: Iterable[Tensor], fake: Iterable[Tensor]) -> float:
    """FID between two streams of image batches in [0, 1], in the classifier's feature space.

    Local to this process: callers pass the whole sets (every worker gets the same answer), and the main
    worker alone may call it (reports), so torchmetrics must not all-gather."""
    fid = FrechetInceptionDistance(feature=features, normalize=True, reset_real_features=True,
                                   sync_on_compute=False)
    fid.eval()
    with torch.no_grad():
        for batch in real:
            fid.update(batch, real=True)
        for batch in fake:
            fid.update(batch, real=False)
    return float(fid.compute())
