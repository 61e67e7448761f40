"""`mlp_regressor`: gated dense blocks, then one output per target; and its tiny preset for tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from dlforge.config.components import Component
from dlforge.nn.archs import tiny_params
from dlforge.nn.layers import Params, Shape


class MlpRegressorParams(Params):
    hidden: list[int] = Field([32], min_length=1, description="units of each gated_dense block")
    dropout: float = Field(0.2, ge=0, lt=1)
    activation: Literal["silu", "gelu", "sigmoid"] = Field("silu", description="of the gates")
    linear_skip: bool = Field(True, description="add a linear model of the inputs (wide & deep)")


def mlp_regressor(p: MlpRegressorParams, shape: Shape, outputs: int) -> list[Any]:
    """[flatten] → (gated_dense → dropout) per hidden width → dense to `outputs` (no activation: any real
    number). With `linear_skip` the blocks sit in a `residual` whose projection is a linear model of the
    inputs: the network starts as linear regression plus a correction, which small tabular data needs."""
    flat: list[Any] = ["flatten"] if len(shape) > 1 else []
    body: list[Any] = []
    for units in p.hidden:
        body += [{"gated_dense": {"units": units, "activation": p.activation}}, {"dropout": p.dropout}]
    body.append({"dense": outputs})
    return [*flat, {"residual": {"layers": body}}] if p.linear_skip else [*flat, *body]


def register(registry: Any) -> None:
    registry.add("mlp_regressor", Component(MlpRegressorParams, mlp_regressor, None,
                                            "regression MLP of gated_dense blocks (plugin layer)"))
    registry.add("mlp_regressor_tiny", Component(tiny_params(MlpRegressorParams, hidden=[8]), mlp_regressor, None,
                                                 "mlp_regressor with one block of 8"))
