"""Image grids as PNG with numpy and Pillow only (no torch): used by reports and `dlforge generate`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def grid_array(images: np.ndarray, columns: int | None = None, pad: int = 1, upscale: int = 1) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → one (H', W', C) uint8 image; C is 1 or 3."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1|3, H, W), got {images.shape}")
    n, c, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    tiles = np.clip(images, 0, 1).repeat(upscale, axis=2).repeat(upscale, axis=3)
    h, w = h * upscale, w * upscale
    canvas = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y:y + h, x:x + w] = tile.transpose(1, 2, 0)
    return (canvas * 255).round().astype(np.uint8)


def save_image(image: np.ndarray, path: Path) -> Path:
    """One (C, H, W) image in [0, 1] as an 8-bit PNG of the same size (grey or RGB)."""
    return _write(grid_array(image[None], columns=1, pad=0), path)


def _write(array: np.ndarray, path: Path) -> Path:
    from PIL import Image

    mode = "L" if array.shape[2] == 1 else "RGB"
    Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode).save(path)
    return path


def save_grid(images: np.ndarray, path: Path, columns: int | None = None, upscale: int | None = None) -> Path:
    """Write a grid PNG; small images (e.g. 8x8 digits) are enlarged so the file is readable."""
    size = images.shape[-1]
    scale = upscale or max(1, 64 // max(size, 1))
    return _write(grid_array(images, columns, upscale=scale), path)
