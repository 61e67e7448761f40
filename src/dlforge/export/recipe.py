"""A package's trained network, rebuilt from the run's recipe files the package carries (config.yaml, run.json,
model.safetensors): what the torch runtime serves and what judges a GAN's samples. Above both the package
loader and the run directory contract, so neither needs the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlforge.config import ExperimentConfig, load_config
from dlforge.export.errors import PackageError
from dlforge.rundir import CONFIG, WEIGHTS, rebuild_model
from dlforge.runinfo import RUN_INFO, RunInfo

if TYPE_CHECKING:
    from torch import nn

    from dlforge.export.package import ModelPackage


def load_package_run(package: ModelPackage) -> tuple[ExperimentConfig, RunInfo, nn.Module]:
    """`dlforge.rundir.load_run` for a loaded (hash-verified) package: the config, data facts and network (CPU,
    eval mode), rebuilt from the package's own copies of the run's files."""
    missing = [name for name in (CONFIG, RUN_INFO, WEIGHTS) if name not in package.manifest.files]
    if missing:
        raise PackageError(f"{package.root}: no {', '.join(missing)} (exported by an older dlforge); re-export the "
                           "run with `dlforge export RUN_DIR`")
    cfg = load_config(package.path(CONFIG))
    info = RunInfo.read(package.path(RUN_INFO))
    return cfg, info, rebuild_model(cfg, info, package.path(WEIGHTS))
