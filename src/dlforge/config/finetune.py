"""Settings for starting from trained weights and fine-tuning them (`model.pretrained`, `train.freeze`…).

Kept apart from schema.py so the fine-tuning vocabulary reads in one place; schema.py plugs these in.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {pattern!r} ({exc})") from None
    return pattern


class PretrainedConfig(_Strict):
    """Where the starting weights come from and how their names map onto this model.

    `model.pretrained: runs/digits` is short for `model.pretrained: {source: runs/digits}`.
    """

    source: str = Field(description="a run directory, a model package, a .safetensors file, a folder with "
                                    "model.safetensors (Hugging Face layout), or 'timm' (timm's hub download)")
    strict: bool = Field(False, description="fail unless every key loads (a replaced head is allowed)")
    strip_prefix: list[str] = Field(default_factory=list,
                                    description="prefixes removed from source keys, e.g. ['module.']")
    rename: dict[str, str] = Field(default_factory=dict,
                                   description="regex → replacement applied to source keys, in order")
    head: Literal["auto", "keep", "reset"] = Field(
        "auto", description="auto: re-initialise the classifier when its shape or labels differ; "
                            "keep: load it if shapes allow; reset: always re-initialise")
    adapt_input: bool = Field(True, description="adapt the first conv when input channels differ (1 ↔ 3)")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, raw: Any) -> Any:
        return {"source": str(raw)} if isinstance(raw, str) else raw

    @field_validator("rename")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            _check_regex(pattern)
        return value


class ParamGroupConfig(_Strict):
    """Parameters whose name matches `params` (a regex, first matching group wins) get their own lr."""

    params: str = Field(description="regex searched in parameter names, e.g. 'body\\.(0|1)\\.'")
    lr: float | None = Field(None, gt=0, description="absolute learning rate for this group")
    lr_scale: float | None = Field(None, gt=0, description="or: a factor on train.optimizer.lr")
    weight_decay: float | None = Field(None, ge=0, description="default: train.optimizer.weight_decay")

    @field_validator("params")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value)

    @model_validator(mode="after")
    def _one_lr(self) -> ParamGroupConfig:
        if self.lr is not None and self.lr_scale is not None:
            raise ValueError("give lr or lr_scale, not both")
        return self


def _freeze_short_form(value: Any) -> Any:
    return [value] if isinstance(value, str) and value != "backbone" else value


def _freeze_regexes(value: Any) -> Any:
    for pattern in value if isinstance(value, list) else []:
        _check_regex(pattern)
    return value


Freeze = Annotated[list[str] | Literal["backbone"] | None, BeforeValidator(_freeze_short_form),
                   AfterValidator(_freeze_regexes)]


def check_finetune(freeze: Any, unfreeze_at_epoch: int | None, epochs: int) -> None:
    """Cross-field rules of the train section's fine-tuning keys (called by TrainConfig)."""
    if unfreeze_at_epoch is not None and freeze is None:
        raise ValueError("train.unfreeze_at_epoch needs train.freeze (nothing is frozen)")
    if unfreeze_at_epoch is not None and unfreeze_at_epoch > epochs:
        raise ValueError(f"train.unfreeze_at_epoch {unfreeze_at_epoch} is after the last epoch ({epochs})")
