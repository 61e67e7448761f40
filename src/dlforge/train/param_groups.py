"""Which parameters train, and at which learning rate: `train.freeze`, `unfreeze_at_epoch`,
`param_groups` (per-regex lr / weight decay) and `layer_decay` (timm's layer-wise lr decay).

Freezing is a function of the epoch alone, so a resumed run freezes exactly as the uninterrupted one.
Frozen parameters stay in the optimiser with `requires_grad=False`: they get no gradient, so no
optimiser touches them (bitwise unchanged), and they start training in place when unfrozen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from dlforge.config import TrainConfig
from dlforge.config.schema import OptimizerConfig
from dlforge.errors import UserError
from dlforge.nn.pretrained import classifier_name


class ParamGroupError(UserError, ValueError):
    """A freeze or param_groups setting that does not fit the model (names no parameter, no head…)."""


def _backbone_rule(net: nn.Module, num_classes: int | None) -> Callable[[str], bool]:
    head = classifier_name(net, num_classes) if num_classes is not None else None
    if head is None and num_classes is None:
        raise ParamGroupError("train.freeze: 'backbone' means all but the classifier, and this task's model has "
                              "none — list regexes of parameter names instead (see `dlforge params`)")
    if head is None:
        raise ParamGroupError("train.freeze: 'backbone' needs a classifier (a final dense layer with one output "
                              f"per class, {num_classes}); none found — list regexes instead (see `dlforge params`)")
    return lambda name: not name.startswith(head + ".")


def freeze_rule(net: nn.Module, freeze: Any, num_classes: int | None) -> Callable[[str], bool]:
    """name → frozen? for parameter and buffer names; checks that every regex names something."""
    if freeze is None:
        return lambda name: False
    if freeze == "backbone":
        return _backbone_rule(net, num_classes)
    names = [n for n, _ in net.named_parameters()]
    for i, pattern in enumerate(freeze):
        if not any(re.search(pattern, n) for n in names):
            raise ParamGroupError(f"train.freeze[{i}]: {pattern!r} matches no parameter "
                                  f"(names look like {', '.join(names[:3])}; see `dlforge params`)")
    return lambda name: any(re.search(p, name) for p in freeze)


@dataclass
class Freezer:
    """Applies `train.freeze` for an epoch; frozen BatchNorm layers keep their running statistics."""

    net: nn.Module
    frozen: Callable[[str], bool]
    unfreeze_at_epoch: int | None
    batchnorms: list[nn.Module] = field(default_factory=list)  # fully frozen BN layers

    @classmethod
    def build(cls, net: nn.Module, cfg: TrainConfig, num_classes: int | None) -> Freezer:
        rule = freeze_rule(net, cfg.freeze, num_classes)
        bns: list[nn.Module] = []
        for name, m in net.named_modules():
            state = [f"{name}.{n}" for n, _ in (*m.named_parameters(), *m.named_buffers())]
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and state and all(map(rule, state)):
                bns.append(m)
        return cls(net, rule, cfg.unfreeze_at_epoch, bns)

    def active(self, epoch: int) -> bool:
        return self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch

    def set_epoch(self, epoch: int) -> bool:
        """Set requires_grad for `epoch` (1-based); True when it changed (DDP must then be rebuilt)."""
        changed = False
        for name, p in self.net.named_parameters():
            trainable = not (self.active(epoch) and self.frozen(name))
            changed |= p.requires_grad != trainable
            p.requires_grad_(trainable)
        return changed

    def hold_batchnorm(self, epoch: int) -> None:
        """Call after `model.train()`: frozen BN layers normalise with (and keep) their running stats."""
        if self.active(epoch):
            for bn in self.batchnorms:
                bn.eval()


def layer_index(net: nn.Module) -> tuple[dict[str, int], int]:
    """Parameter name → layer number (0 = input side), by top-level block: `body.3.body.0.weight` → block
    `body.3`. The classifier, last, is the highest layer."""
    blocks: dict[str, int] = {}
    index = {}
    for name, _ in net.named_parameters():
        parts = name.split(".")
        block = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        index[name] = blocks.setdefault(block, len(blocks))
    return index, len(blocks)


@dataclass
class GroupInfo:
    """One optimiser parameter group, described for `dlforge params`."""

    name: str
    lr: float
    weight_decay: float
    params: list[tuple[str, nn.Parameter]]


def _group_of(name: str, cfg: TrainConfig) -> int | None:
    return next((i for i, g in enumerate(cfg.param_groups) if re.search(g.params, name)), None)


def _group_settings(i: int | None, cfg: TrainConfig, base: OptimizerConfig) -> tuple[float, float, str]:
    if i is None:
        return base.lr, base.weight_decay, "default"
    g = cfg.param_groups[i]
    lr = g.lr if g.lr is not None else base.lr * (g.lr_scale or 1.0)
    wd = g.weight_decay if g.weight_decay is not None else base.weight_decay
    return lr, wd, f"param_groups[{i}] {g.params!r}"


def plan_groups(net: nn.Module, cfg: TrainConfig, base: OptimizerConfig | None = None) -> list[GroupInfo]:
    """Parameter groups in a fixed order (first parameter's position), so optimiser state resumes exactly.

    `base`: the optimizer settings the groups scale (default train.optimizer)."""
    layers, n_layers = layer_index(net)
    groups: dict[tuple[int | None, int | None], GroupInfo] = {}
    for name, p in net.named_parameters():
        i = _group_of(name, cfg)
        lr, wd, label = _group_settings(i, cfg, base or cfg.optimizer)
        layer = layers[name] if cfg.layer_decay is not None else None
        if layer is not None:
            lr *= cfg.layer_decay ** (n_layers - 1 - layer)  # type: ignore[operator]
            label += f" L{layer}/{n_layers - 1}"
        groups.setdefault((i, layer), GroupInfo(label, lr, wd, [])).params.append((name, p))
    for i, g in enumerate(cfg.param_groups):
        if not any(key[0] == i for key in groups):
            raise ParamGroupError(f"train.param_groups[{i}].params: {g.params!r} matches no parameter "
                                  "(an earlier group may take them all; see `dlforge params`)")
    return list(groups.values())


def optimizer_groups(plan: list[GroupInfo]) -> list[dict[str, Any]]:
    return [{"params": [p for _, p in g.params], "lr": g.lr, "weight_decay": g.weight_decay, "name": g.name}
            for g in plan]


def check_freeze_setup(cfg: TrainConfig, distributed: bool) -> None:
    """FSDP shards by what trains at wrap time; freezing under it is not supported (nor tested) yet."""
    if distributed and cfg.strategy == "fsdp" and cfg.freeze is not None:
        raise ParamGroupError("train.freeze: not supported with train.strategy fsdp across workers yet; "
                              "use train.strategy: ddp (frozen layers then skip the gradient all-reduce too)")


def describe(net: nn.Module, cfg: TrainConfig, num_classes: int | None) -> list[dict[str, Any]]:
    """One row per optimiser group for `dlforge params`: lr, weight decay, tensors, trainable at epoch 1."""
    frozen = freeze_rule(net, cfg.freeze, num_classes)
    rows = []
    for g in plan_groups(net, cfg):
        total = sum(p.numel() for _, p in g.params)
        held = sum(p.numel() for n, p in g.params if frozen(n))
        rows.append({"group": g.name, "lr": g.lr, "weight_decay": g.weight_decay, "tensors": len(g.params),
                     "parameters": total, "trainable": total - held,
                     "first": g.params[0][0], "last": g.params[-1][0]})
    return rows
