"""Denoising image files with a package's ONNX graph, no torch: `dlforge predict` on a denoise package."""

from __future__ import annotations

from pathlib import Path

from dlforge.export.errors import InputFileError, PackageError
from dlforge.export.onnx import session
from dlforge.export.package import ModelPackage
from dlforge.imagedecode import ImageError
from dlforge.imagegrid import save_image

TAKES = "this model (task denoise) takes images: pass .png/.jpg files"


def denoise_files(package: ModelPackage, files: list[Path], out_dir: Path) -> list[Path]:
    """Denoise each image file; writes <out_dir>/<name>.denoised.png and returns the paths."""
    from dlforge.data.datasets import IMAGE_SUFFIXES, read_image

    spec = package.manifest.inputs[0]
    channels, height, width = spec.shape[1:]
    out_dir.mkdir(parents=True, exist_ok=True)
    sess, written = session(package.onnx_path), []
    for path in files:
        if not path.is_file():
            raise PackageError(f"{path}: no such file")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputFileError(f"{path}: {TAKES}")
        try:
            image = read_image(path, (height, width), channels)[None]
        except ImageError as exc:  # names the file and the decoder's reason
            raise InputFileError(str(exc)) from None
        denoised = sess.run(None, {spec.name: image})[0]
        written.append(save_image(denoised[0], out_dir / f"{path.stem}.denoised.png"))
    return written
