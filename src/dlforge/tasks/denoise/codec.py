"""Serving codec of denoisers (torch-free): images in [0, 1] in, denoised images out, same shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.serve.protocol import MetadataTensor, ProtocolError
from dlforge.taskapi import Codec


class ImageToImageCodec(Codec):
    def __init__(self, manifest: Any) -> None:
        self.preprocessing = manifest.preprocessing
        self.inputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in manifest.inputs]
        self.outputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
                        for t in manifest.outputs]

    def decode_upload(self, data: bytes | Path) -> dict[str, np.ndarray]:
        """An image file as the model's [1, C, H, W] input (decoded and resized as in training)."""
        from dlforge.serve.images import preprocess_image

        return {self.inputs[0].name: preprocess_image(data, self.preprocessing)}

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            if not np.isfinite(array).all():
                raise ProtocolError(f"input '{name}': NaN or infinite values (images are floats in [0, 1])")
        return inputs
