"""Generation from a GAN package with ONNX Runtime only: `dlforge generate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.export.errors import PackageError
from dlforge.export.onnx import session
from dlforge.export.package import ModelPackage
from dlforge.imagegrid import save_grid
from dlforge.preprocessing import GeneratorPreprocessing

MAX_GENERATE = 1024


def _require_task(package: ModelPackage, task: str, command: str) -> None:
    if package.manifest.task != task:
        raise PackageError(f"{package.root}: a '{package.manifest.task}' model; `dlforge {command}` needs a "
                           f"{task} package")


def generate_images(package: ModelPackage, n: int, label: int | None, seed: int) -> np.ndarray:
    """`n` images (N, C, H, W) in [0, 1] from seeds seed … seed+n-1; classes cycle unless `label` is given."""
    from dlforge.tasks.gan.codec import CLASS, IMAGE, LATENT, check_classes, latents_from_seeds

    _require_task(package, "gan", "generate")
    if not 1 <= n <= MAX_GENERATE:
        raise PackageError(f"--n: between 1 and {MAX_GENERATE} images, got {n}")
    if seed < 0:
        raise PackageError(f"--seed: must be non-negative, got {seed}")
    prep, labels = GeneratorPreprocessing.of(package.manifest.preprocessing), package.manifest.labels
    feeds = {LATENT: latents_from_seeds(np.arange(seed, seed + n), prep.latent_dim)}
    if prep.conditional:
        classes = np.full(n, label, np.int64) if label is not None else np.arange(n) % len(labels)
        if label is not None and not 0 <= label < len(labels):
            raise PackageError(f"--class: {label} is out of range (this generator knows classes 0..{len(labels) - 1})")
        feeds[CLASS] = check_classes(classes, len(labels))
    elif label is not None:
        raise PackageError("--class: this generator is unconditional; leave --class out")
    return session(package.onnx_path).run([IMAGE], feeds)[0]


def write_generated(package: ModelPackage, n: int, label: int | None, seed: int, out: Path) -> Path:
    images = generate_images(package, n, label, seed)
    conditional = GeneratorPreprocessing.of(package.manifest.preprocessing).conditional
    classes = len(package.manifest.labels)
    columns = classes if conditional and label is None and n >= classes else None
    return save_grid(images, out, columns=columns)
