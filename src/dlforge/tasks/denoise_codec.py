"""Serving codec of denoisers (torch-free): images in [0, 1] in, denoised images out, same shape."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.serve.protocol import MetadataTensor, ProtocolError


class ImageToImageCodec:
    def __init__(self, manifest: Any) -> None:
        self.inputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in manifest.inputs]
        self.outputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
                        for t in manifest.outputs]
        self.optional: frozenset[str] = frozenset()
        self.pad: dict[str, int | float] = {}

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            if not np.isfinite(array).all():
                raise ProtocolError(f"input '{name}': NaN or infinite values (images are floats in [0, 1])")
        return inputs

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return outputs


def codec(package: Any) -> ImageToImageCodec:
    return ImageToImageCodec(package.manifest)
