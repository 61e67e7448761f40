"""A task defined outside dlforge, as a new task module would be: classification plus an EMA copy of
the weights kept in `trainer.extra` and a second reported loss. Used by test_tasks.py."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dlforge.tasks.classification.task import ClassificationTask


class EmaClassification(ClassificationTask):
    name = "toy_ema"
    losses = ("loss", "weight_norm")

    def setup(self, trainer: Any) -> None:
        trainer.extra["ema"] = AveragedModel(trainer.net, multi_avg_fn=get_ema_multi_avg_fn(0.9))

    def train_step(self, tr: Any, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        losses = super().train_step(tr, batch, optimizer_step)
        if optimizer_step:
            tr.extra["ema"].update_parameters(tr.net)
        norm = torch.stack([p.detach().norm() for p in tr.net.parameters()]).norm()
        return {**losses, "weight_norm": norm}


TASK = EmaClassification()
