"""The regressor's serving side (torch-free): the graph's signature is the client's.

A client sends `input` (FP32 [n, features], the raw measurements: the graph standardises them) and gets
`prediction` (FP32 [n, 1]) in the target's units. The server checks names, shapes, datatypes and finite
values before a row reaches the codec, so there is nothing left to decode or encode.
"""

from __future__ import annotations

from typing import Any

from dlforge.serve.protocol import MetadataTensor
from dlforge.taskapi import Codec, Serving


class PassThroughCodec(Codec):
    def __init__(self, manifest: Any) -> None:
        self.inputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in manifest.inputs]
        self.outputs = [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape))
                        for t in manifest.outputs]


class RegressionServing(Serving):
    name = "regression"

    def codec(self, package: Any) -> Codec:
        return PassThroughCodec(package.manifest)


SERVING = RegressionServing()
