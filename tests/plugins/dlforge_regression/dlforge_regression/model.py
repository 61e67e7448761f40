"""The regression network: any dlforge model spec with one output, answering in the target's own units."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from dlforge.config import ModelConfig
from dlforge.nn import build_model
from dlforge.nn.build import InputNormalize

if TYPE_CHECKING:
    from dlforge_regression.data import TabularPreprocessing


class Regressor(nn.Module):
    """`net` (the spec's layers, inputs standardised inside) predicts the standardised target; the train
    split's mean and std turn it back into the target's units, so the exported graph needs no
    post-processing and the loss sees numbers near 1 whatever the target's scale."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.target_mean: Tensor
        self.target_std: Tensor
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.target_std + self.target_mean


def build_regressor(model: ModelConfig, input_shape: tuple[int, ...],
                    preprocessing: TabularPreprocessing | None = None) -> Regressor:
    """The network for `model`; `preprocessing` (the data's statistics) fills the normalisation buffers of a
    fresh one — a rebuilt one gets them from its saved weights."""
    regressor = Regressor(build_model(model, input_shape, 1))
    if preprocessing is not None:
        if isinstance(regressor.net.normalize, InputNormalize):
            regressor.net.normalize.set_stats(preprocessing.mean, preprocessing.std)
        regressor.target_mean.fill_(preprocessing.target_mean)
        regressor.target_std.fill_(preprocessing.target_std)
    return regressor
