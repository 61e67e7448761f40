"""Generation and denoising from a package with ONNX Runtime only: `dlforge generate`, denoise `predict`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlforge.export.errors import PackageError
from dlforge.export.onnx import session
from dlforge.export.package import ModelPackage
from dlforge.imagegrid import save_grid, save_image

MAX_GENERATE = 1024


def _require_task(package: ModelPackage, task: str, command: str) -> None:
    if package.manifest.task != task:
        raise PackageError(f"{package.root}: a '{package.manifest.task}' model; `dlforge {command}` needs a "
                           f"{task} package")


def generate_images(package: ModelPackage, n: int, label: int | None, seed: int) -> np.ndarray:
    """`n` images (N, C, H, W) in [0, 1] from seeds seed … seed+n-1; classes cycle unless `label` is given."""
    from dlforge.tasks.gan_codec import CLASS, IMAGE, LATENT, check_classes, latents_from_seeds

    _require_task(package, "gan", "generate")
    if not 1 <= n <= MAX_GENERATE:
        raise PackageError(f"--n: between 1 and {MAX_GENERATE} images, got {n}")
    if seed < 0:
        raise PackageError(f"--seed: must be non-negative, got {seed}")
    prep, labels = package.manifest.preprocessing, package.manifest.labels
    feeds = {LATENT: latents_from_seeds(np.arange(seed, seed + n), int(prep["latent_dim"]))}
    if prep["conditional"]:
        classes = np.full(n, label, np.int64) if label is not None else np.arange(n) % len(labels)
        if label is not None and not 0 <= label < len(labels):
            raise PackageError(f"--class: {label} is out of range (this generator knows classes 0..{len(labels) - 1})")
        feeds[CLASS] = check_classes(classes, len(labels))
    elif label is not None:
        raise PackageError("--class: this generator is unconditional; leave --class out")
    return session(package.onnx_path).run([IMAGE], feeds)[0]


def write_generated(package: ModelPackage, n: int, label: int | None, seed: int, out: Path) -> Path:
    images = generate_images(package, n, label, seed)
    conditional = package.manifest.preprocessing["conditional"]
    classes = len(package.manifest.labels)
    columns = classes if conditional and label is None and n >= classes else None
    return save_grid(images, out, columns=columns)


def denoise_files(package: ModelPackage, files: list[Path], out_dir: Path) -> list[Path]:
    """Denoise each image file; writes <out_dir>/<name>.denoised.png and returns the paths."""
    from dlforge.data.datasets import read_image

    _require_task(package, "denoise", "predict")
    spec = package.manifest.inputs[0]
    channels, height, width = spec.shape[1:]
    out_dir.mkdir(parents=True, exist_ok=True)
    sess, written = session(package.onnx_path), []
    for path in files:
        if not path.is_file():
            raise PackageError(f"{path}: no such file")
        try:
            image = read_image(path, (height, width), channels)[None]
        except Exception as exc:  # PIL raises many types for unreadable files
            raise PackageError(f"{path}: not a readable image ({type(exc).__name__})") from None
        denoised = sess.run(None, {spec.name: image})[0]
        written.append(save_image(denoised[0], out_dir / f"{path.stem}.denoised.png"))
    return written
