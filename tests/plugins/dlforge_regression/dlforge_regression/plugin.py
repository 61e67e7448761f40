"""The entry points: one `register(registry)` function per dlforge registry (see pyproject.toml).

Kept free of torch at import time: `dlforge --help` and the server list tasks without loading torch. The
other registries are only opened by code that has imported torch already, so those functions import
their modules when called.
"""

from __future__ import annotations

from typing import Any

from dlforge.taskapi import TaskEntry


def register_task(registry: Any) -> None:
    registry.add("regression", TaskEntry("dlforge_regression.task", "dlforge_regression.serving",
                                         "features → one number: MSE, MAE, R² beside a linear baseline"))


def register_datasets(registry: Any) -> None:
    from dlforge_regression.data import register

    register(registry)


def register_archs(registry: Any) -> None:
    from dlforge_regression.archs import register

    register(registry)


def register_layers(registry: Any) -> None:
    from dlforge_regression.layers import register

    register(registry)
