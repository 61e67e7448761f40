"""The `tune:` section: a search space over the experiment's own keys, for `dlforge tune`.

Each entry of `space` is a dotted key of the experiment (what `--set` takes) and one distribution:
`{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, `{int: [lo, hi]}` (inclusive) or `{choice: [a, b, …]}`.
Only the shape of the space is checked here; whether every key exists in the experiment is checked by
`dlforge.tune.space.check_space`, which builds the experiment with each key set.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from dlforge.config.common import Strict

KINDS = {"loguniform": "loguniform", "uniform": "uniform", "int": "integer", "choice": "choice"}  # YAML: field


class Distribution(Strict):
    """One key's values: exactly one of the four kinds."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = Field(None, alias="int")  # `int` in YAML (a builtin's name in Python)
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one_valid_kind(self) -> Distribution:
        given = [k for k, field in KINDS.items() if getattr(self, field) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(given) or 'none'})")
        if self.choice is not None:
            if not self.choice:
                raise ValueError("choice: needs at least one value")
            return self
        low, high = self.bounds
        if low >= high:
            raise ValueError(f"{given[0]}: low ({low}) must be below high ({high})")
        if self.loguniform is not None and low <= 0:
            raise ValueError(f"loguniform: low must be above 0 (got {low})")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        """Dumped as it is written (`{int: [1, 4]}`), so a resolved config loads again."""
        value = getattr(self, KINDS[self.kind])
        return {self.kind: list(value)}

    @property
    def kind(self) -> str:
        return next(k for k, field in KINDS.items() if getattr(self, field) is not None)

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range kind."""
        return getattr(self, KINDS[self.kind])


class TuneConfig(Strict):
    space: dict[str, Distribution] = Field(min_length=1, description=(
        "dotted experiment keys → {loguniform|uniform|int: [low, high]} or {choice: [...]}"))
    metric: str | None = Field(None, description="a per-epoch validation metric (val_accuracy, val_loss…); "
                                                 "default: train.monitor (the task's own)")
    mode: Literal["max", "min"] | None = Field(None, description="default: the task's direction for the metric")
    trials: int = Field(20, ge=1, description="trials in the study (complete, pruned and failed ones count)")
    pruner: Literal["median", "asha", "none"] = Field(
        "median", description="stop trials early on the per-epoch metric: median (Optuna's MedianPruner) or "
                              "asha (successive halving)")
    prune_after_epochs: int = Field(2, ge=1, description="no trial is pruned before this many epochs")
    startup_trials: int = Field(5, ge=0, description="trials the sampler draws at random (and the median pruner "
                                                     "lets finish) before it models the space")
    storage: str | None = Field(None, description=(
        "Optuna storage: any SQLAlchemy URL (postgresql://…, mysql://…) lets several machines share the study; "
        "default: sqlite in the tune folder"))
