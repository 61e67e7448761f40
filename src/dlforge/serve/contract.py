"""What an engine gives the server: its V2 metadata and `infer` over whole batches.

Kept apart from the engines themselves (dlforge.serve.runtime) so that a task's own engine (seq2seq's
decoding loop in dlforge.tasks) can implement it without importing the module that registers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dlforge.serve.protocol import MetadataTensor

if TYPE_CHECKING:
    from dlforge.export.package import ModelPackage

__all__ = ["Runtime", "RuntimeMetadata", "Tensors", "package_metadata"]

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class RuntimeMetadata:
    """What the V2 metadata route reports for one loaded model."""

    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class Runtime(Protocol):
    metadata: RuntimeMetadata

    def infer(self, batch: Tensors) -> Tensors: ...


def package_metadata(package: ModelPackage, platform: str) -> RuntimeMetadata:
    m = package.manifest
    return RuntimeMetadata(
        platform=platform,
        inputs=[MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in m.inputs],
        outputs=[MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in m.outputs],
    )
