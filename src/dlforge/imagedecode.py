"""The one image decoder: bytes or a file → float32 (C, H, W) in [0, 1], for training data and served uploads.

Torch-free (PIL + numpy) so the server can use it. Uploads are untrusted, so the decoder is bounded:
only common formats are opened (each PIL reader is a parser of its own, and rarer ones fail in odd
ways), the pixel count is checked from the header before any pixel is decoded (a 68-byte PNG can
claim 20000x20000), and whatever a reader raises becomes one `ImageError` naming the problem.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from dlforge.errors import UserError

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # what IMAGE_SUFFIXES promise, nothing rarer
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_PIXELS = 40_000_000  # ~6300x6300; decoded RGB is 120 MB before resizing


class ImageError(UserError, ValueError):
    """An image that cannot be decoded (not an image, a format we do not read, too large, corrupt)."""


def decode_image(source: bytes | Path, size: tuple[int, int], channels: int, max_pixels: int = MAX_PIXELS,
                 ) -> np.ndarray:
    """Decode, convert to L or RGB and resize to `size` (height, width): float32 (C, H, W), pixel / 255."""
    mode = "L" if channels == 1 else "RGB"
    name = str(source) if isinstance(source, Path) else "the upload"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our own limit speaks first
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=FORMATS) as image:
                _check_pixels(name, image.size, max_pixels)
                image.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when that suffices
                resized = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image claims too many pixels (at most {max_pixels})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a format we read ({', '.join(FORMATS)})") from None
    except Exception as exc:  # each PIL reader raises its own kinds (OSError, ValueError, SyntaxError, …)
        raise ImageError(f"{name}: the image could not be decoded ({type(exc).__name__}: {_short(exc)})") from None
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _check_pixels(name: str, dims: tuple[int, int], max_pixels: int) -> None:
    width, height = dims
    if width * height > max_pixels:
        raise ImageError(f"{name}: the image is {width}x{height}; at most {max_pixels} pixels are allowed")
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image is {width}x{height}, which has no pixels")


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"
