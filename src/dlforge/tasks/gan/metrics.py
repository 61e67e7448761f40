"""How good is a generator: FID, class accuracy of generated samples, diversity — all deterministic.

The judge is a classifier trained by dlforge on the same data (`gan.classifier`): its penultimate
features give the FID (Inception features mean nothing on 8x8 digits) and its predictions say
whether a generated "7" looks like a 7. Without one, the FID is computed on raw pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dlforge.config import ConfigError
from dlforge.evaluate.image_quality import ClassifierFeatures, frechet_distance
from dlforge.runinfo import RUN_INFO

EVAL_SEED = 1234  # generated samples for metrics: the same latents every epoch and every run


class PixelFeatures(nn.Module):
    """Flattened pixels: the fallback feature space for FID when no classifier is given."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.num_features = math.prod(image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


@dataclass
class Judge:
    """A trained classifier (or nothing) and the feature space FID is measured in."""

    features: nn.Module
    classifier: nn.Module | None
    source: str

    def to(self, device: torch.device) -> Judge:
        self.features.to(device)
        if self.classifier is not None:
            self.classifier.to(device)
        return self


def load_judge(source: str | None, image_shape: tuple[int, ...], labels: list[str]) -> Judge:
    """The classifier at `source` (a dlforge run directory or package), checked against the data."""
    if source is None:
        return Judge(PixelFeatures(image_shape), None, "pixels")
    path = Path(source)
    net, input_shape, trained_on = _rebuild_classifier(path)
    if tuple(input_shape) != tuple(image_shape) or trained_on != labels:
        raise ConfigError([f"gan.classifier: {path} was trained on inputs {tuple(input_shape)} and "
                           f"{_shown(trained_on)}, but this data has {tuple(image_shape)} and {_shown(labels)} — "
                           "train the classifier on the same dataset"])
    net.eval().requires_grad_(False)
    return Judge(ClassifierFeatures(net, tuple(image_shape)), net, str(path))


def _shown(labels: list[str]) -> str:
    return f"{len(labels)} labels [{', '.join(labels[:12])}{', …' if len(labels) > 12 else ''}]"


def _rebuild_classifier(path: Path) -> tuple[nn.Module, list[int], list[str]]:
    """A classifier from a run directory or a (hash-verified) package, rebuilt from its recipe; never a pickle."""
    from dlforge.export.package import MANIFEST, PackageError, load_package
    from dlforge.export.recipe import load_package_run
    from dlforge.rundir import RunDirError, load_run

    is_run = (path / RUN_INFO).is_file() and not (path / MANIFEST).is_file()  # a package holds run.json too
    try:
        cfg, info, net = load_run(path) if is_run else load_package_run(load_package(path))
    except (PackageError, RunDirError) as exc:
        raise ConfigError([f"gan.classifier: {exc} (give a classifier's run directory or package)"]) from None
    if cfg.task != "classification":
        raise ConfigError([f"gan.classifier: {path} is a '{cfg.task}' {'run' if is_run else 'package'}, not a "
                           "classifier — give the run directory or package of a classification run on this data"])
    return net, info.input_shape, info.labels


def eval_latents(n: int, latent_dim: int, num_classes: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Fixed latents and balanced class labels (0, 1, …, n-1, 0, 1, …) for evaluation."""
    g = torch.Generator().manual_seed(EVAL_SEED)
    z = torch.randn(n, latent_dim, generator=g)
    y = torch.arange(n) % max(num_classes, 1)
    return z.to(device), y.to(device)


@torch.no_grad()
def generate(generator: nn.Module, z: Tensor, y: Tensor | None, batch: int = 256) -> Tensor:
    was_training = generator.training
    generator.eval()
    out = torch.cat([generator(z[i:i + batch], None if y is None else y[i:i + batch])
                     for i in range(0, len(z), batch)])
    generator.train(was_training)
    return out


def diversity(features: Tensor, labels: Tensor) -> float:
    """Mean within-class pairwise feature distance (a collapsed generator scores ~0)."""
    distances = []
    for c in labels.unique():
        f = features[labels == c]
        if len(f) > 1:
            distances.append(torch.pdist(f.double()).mean())
    return float(torch.stack(distances).mean()) if distances else 0.0


@torch.no_grad()
def sample_quality(judge: Judge, fake: Tensor, fake_y: Tensor, real: Tensor, real_y: Tensor,
                   conditional: bool) -> dict[str, float | None]:
    """FID (fake vs real), diversity relative to the real data's, and the judge's accuracy on the fakes."""
    batches = 256
    fid = frechet_distance(judge.features, real.split(batches), fake.split(batches))
    fake_f = torch.cat([judge.features(b) for b in fake.split(batches)])
    real_f = torch.cat([judge.features(b) for b in real.split(batches)])
    real_div = diversity(real_f, real_y if conditional else torch.zeros_like(real_y))
    fake_div = diversity(fake_f, fake_y if conditional else torch.zeros_like(fake_y))
    relative = fake_div / real_div if real_div else 0.0
    out: dict[str, float | None] = {"fid": fid, "diversity": relative, "class_accuracy": None}
    if judge.classifier is not None and conditional:
        pred = torch.cat([judge.classifier(b).argmax(1) for b in fake.split(batches)])
        out["class_accuracy"] = float((pred == fake_y).double().mean())
    return out
