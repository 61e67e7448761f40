"""The one image decoder: bytes or a file → float32 (C, H, W) in [0, 1], for training data and served uploads.

Torch-free (PIL + numpy) so the server can use it. Uploads are untrusted, so the decoder is bounded:
only common formats are opened (each PIL reader is a parser of its own, and rarer ones fail in odd
ways), the pixel count is checked from the header before any pixel is decoded (a 68-byte PNG can
claim 20000x20000), and whatever a reader raises becomes one `ImageError` naming the problem.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from dlforge.errors import UserError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # what IMAGE_SUFFIXES promise, nothing rarer
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_PIXELS = 40_000_000  # ~6300x6300; decoded RGB is 120 MB before resizing


class ImageError(UserError, ValueError):
    """An image that cannot be decoded (not an image, a format we do not read, too large, corrupt)."""


Fit = Literal["stretch", "center_crop"]


@dataclass(frozen=True)
class RandomCrop:
    """Random-resized-crop parameters (Inception-style, as torchvision/timm): a region covering `scale` of
    the image's area with an aspect ratio in `ratio`, resized to the model's size."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, width: int, height: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of one crop; the whole image's largest centred crop if ten tries miss."""
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if 0 < w <= width and 0 < h <= height:
                left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
                return left, top, left + w, top + h
        return _centre_box(width, height, min(max(width / height, self.ratio[0]), self.ratio[1]))


def _centre_box(width: int, height: int, aspect: float) -> tuple[float, float, float, float]:
    """The largest centred box of aspect ratio `aspect` (width / height) inside the image."""
    w, h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def decode_image(source: bytes | Path, size: tuple[int, int], channels: int, max_pixels: int = MAX_PIXELS,
                 fit: Fit = "stretch", crop: RandomCrop | None = None, rng: np.random.Generator | None = None,
                 name: str = "") -> np.ndarray:
    """Decode, convert to L or RGB and resize to `size` (height, width): float32 (C, H, W), pixel / 255.

    `fit`: stretch the whole image to `size`, or center_crop (the largest centred region of the target's
    aspect ratio, then resize). `crop` with `rng`: a random-resized crop of the original instead (training).
    `name`: what messages call the image (default: the path, or "the upload" for bytes)."""
    mode = "L" if channels == 1 else "RGB"
    name = name or (str(source) if isinstance(source, Path) else "the upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our own limit speaks first
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=FORMATS) as image:
                _check_pixels(name, image.size, max_pixels)
                if crop is None:
                    image.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when that suffices
                width, height = image.size
                if crop is not None and rng is not None:
                    box: tuple[float, float, float, float] | None = crop.box(width, height, rng)
                elif fit == "center_crop":
                    box = _centre_box(width, height, size[1] / size[0])
                else:
                    box = None
                resized = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image claims too many pixels (at most {max_pixels})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a format we read ({', '.join(FORMATS)})") from None
    except Exception as exc:  # each PIL reader raises its own kinds (OSError, ValueError, SyntaxError, …)
        raise ImageError(f"{name}: the image could not be decoded ({_short(exc)})") from None
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _check_pixels(name: str, dims: tuple[int, int], max_pixels: int) -> None:
    width, height = dims
    if width * height > max_pixels:
        raise ImageError(f"{name}: the image is {width}x{height}; at most {max_pixels} pixels are allowed")
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image is {width}x{height}, which has no pixels")


def _short(exc: Exception, limit: int = 200) -> str:
    """The decoder's reason without the in-memory file's repr (`<_io.BytesIO object at 0x…>`)."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image", str(exc)) or "it is truncated or corrupt"
    return text if len(text) <= limit else text[:limit] + "…"
