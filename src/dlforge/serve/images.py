"""Image upload → the model's input tensor, following the package's `preprocessing` section.

Uploads are 8-bit images, so pixels are scaled by 1/255 to the model's raw [0, 1] input; mean/std
normalisation happens inside the exported model, not here.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dlforge.serve.protocol import ProtocolError

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding them


def preprocess_image(data: bytes, preprocessing: Any) -> np.ndarray:
    """A [1, C, H, W] float32 batch of one image, resized and converted as the model expects."""
    if _field(preprocessing, "kind") != "image":
        raise ProtocolError("this model takes no images (its package has no image preprocessing); use /infer")
    height, width = _field(preprocessing, "size")
    mode = "L" if _field(preprocessing, "channel_order") == "L" else "RGB"
    image = _open(data).convert(mode).resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    chw = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(chw[None])


def _field(preprocessing: Any, key: str) -> Any:
    """The manifest's preprocessing section is a dict (or a model with attributes)."""
    if isinstance(preprocessing, dict):
        return preprocessing.get(key)
    return getattr(preprocessing, key, None)


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise ProtocolError("the upload is not an image PIL can read (send PNG, JPEG, ...)") from None
    if image.width * image.height > MAX_PIXELS:
        raise ProtocolError(f"image is {image.width}x{image.height}; at most {MAX_PIXELS} pixels allowed")
    try:
        image.load()
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"the image could not be decoded: {exc}") from None
    return image


def top_k(probabilities: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """The k most likely labels with their probabilities, most likely first."""
    order = np.argsort(-probabilities)[:k]
    names = labels if len(labels) == len(probabilities) else [str(i) for i in range(len(probabilities))]
    return [{"label": names[i], "index": int(i), "probability": float(probabilities[i])} for i in order]
