"""Image upload → the model's input tensor, following the package's `preprocessing` section.

Decoding is the shared, bounded decoder of dlforge.imagedecode (the one training uses), so served
pixels match trained ones: 8-bit pixels scaled by 1/255 to the model's raw [0, 1] input; mean/std
normalisation happens inside the exported model, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.imagedecode import ImageError, decode_image
from dlforge.preprocessing import ImagePreprocessing, Preprocessing
from dlforge.serve.protocol import ProtocolError


def preprocess_image(data: bytes | Path, preprocessing: Preprocessing) -> np.ndarray:
    """A [1, C, H, W] float32 batch of one image, resized and converted as the model expects."""
    if not isinstance(preprocessing, ImagePreprocessing):
        raise ProtocolError("this model takes no images (its package has no image preprocessing); use /infer")
    channels = 1 if preprocessing.channel_order == "L" else 3
    try:
        chw = decode_image(data, preprocessing.size, channels, fit=preprocessing.resize)
    except ImageError as exc:
        raise ProtocolError(str(exc)) from None
    return np.ascontiguousarray(chw[None])


def top_k(probabilities: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """The k most likely labels with their probabilities, most likely first."""
    order = np.argsort(-probabilities)[:k]
    names = labels if len(labels) == len(probabilities) else [str(i) for i in range(len(probabilities))]
    return [{"label": names[i], "index": int(i), "probability": float(probabilities[i])} for i in order]
