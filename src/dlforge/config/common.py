"""The building blocks every section of the experiment file shares: strictness, component lists, a model, an optimizer.

They sit below dlforge.config.schema so that task sections (dlforge.config.generative: a GAN's
discriminator is a second model with its own optimizer) can use them without a circular import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlforge.config.finetune import PretrainedConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ComponentSpec(Strict):
    """One entry of a component list. YAML short forms are accepted:
    `- relu`, `- dense: 10` (value), `- conv2d: {channels: 32, kernel: 3}` (params),
    `- {type: conv2d, channels: 32}`."""

    type: str
    value: Any = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"type": raw}
        if isinstance(raw, dict) and "type" not in raw and len(raw) == 1:
            ((name, body),) = raw.items()
            if isinstance(body, dict):
                return {"type": name, "params": body}
            return {"type": name, "value": body}
        if isinstance(raw, dict) and "type" in raw and set(raw) - {"type", "value", "params"}:
            params = {k: v for k, v in raw.items() if k not in {"type", "value", "params"}}
            return {"type": raw["type"], "value": raw.get("value"), "params": {**raw.get("params", {}), **params}}
        return raw


class ModelConfig(Strict):
    arch: str | None = Field(None, description="a registered architecture (see `dlforge models`)")
    params: dict[str, Any] = Field(default_factory=dict, description="settings of `arch`")
    layers: list[ComponentSpec] | None = Field(None, description="a layer list (see `dlforge layers`)")
    pretrained: PretrainedConfig | None = Field(None, description="start from these weights (see docs/finetuning.md)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.arch is None) == (self.layers is None):
            raise ValueError("give exactly one of model.arch (e.g. 'cnn_small') or model.layers")
        if self.layers is not None and self.params:
            raise ValueError("model.params belongs to model.arch; put layer settings in each layer")
        return self


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, description="learning rate for the global batch (any world size)")
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    betas: tuple[float, float] = (0.9, 0.999)
