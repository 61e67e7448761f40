"""`gated_dense`: a gated linear unit (GLU; SwiGLU with silu, GEGLU with gelu) for `model.layers`.

One projection to twice the width, split in two halves: value × activation(gate). The gate lets each unit
switch features on and off per sample, which a plain dense + ReLU of the same width does less well; it is
the feed-forward block of most current Transformers and a good default for small tabular MLPs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from dlforge.config.components import Component
from dlforge.nn.layers import Params, Shape, need_rank

GATES: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class GatedDenseParams(Params):
    units: int = Field(ge=1, description="output features")
    activation: Literal["silu", "gelu", "sigmoid"] = Field("silu", description="of the gate: SwiGLU, GEGLU, GLU")
    bias: bool = True


class GatedDense(nn.Module):
    def __init__(self, features: int, p: GatedDenseParams) -> None:
        super().__init__()
        self.proj = nn.Linear(features, 2 * p.units, bias=p.bias)
        self.gate = GATES[p.activation]()

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * self.gate(gate)


def gated_dense(p: GatedDenseParams, shape: Shape) -> nn.Module:
    need_rank("gated_dense", shape, (1, 2), "(features,) or (steps, features)", " — add `- flatten` before it")
    return GatedDense(shape[-1], p)


def register(registry: Any) -> None:
    registry.add("gated_dense", Component(GatedDenseParams, gated_dense, "units",
                                          "gated linear unit: value × silu/gelu/sigmoid(gate) (SwiGLU by default)"))
