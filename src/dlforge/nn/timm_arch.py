"""`model.arch: timm/<name>`: any architecture of timm (PyTorch Image Models), where timm is installed.

timm is optional: it depends on torchvision, which dlforge does not install. Where timm cannot be imported,
for whatever reason (missing, or a torchvision built for another torch: `import timm` then raises a
RuntimeError about `torchvision::nms`), these archs fail with one clear line instead of a traceback.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import nn

from dlforge.errors import UserError
from dlforge.registry import suggest

PREFIX = "timm/"


class TimmError(UserError, ValueError):
    """timm is missing, or does not know the architecture."""


def is_timm(arch: str | None) -> bool:
    return bool(arch) and str(arch).startswith(PREFIX)


def import_timm(arch: str) -> ModuleType:
    try:
        import timm
    except Exception as exc:  # not only ImportError: a mismatched torchvision raises RuntimeError
        raise TimmError(f"model.arch: {arch} needs the timm package, which cannot be imported here "
                        f"({type(exc).__name__}: {_first_line(exc)}); {_install_hint()} — or pick a dlforge "
                        "architecture (`dlforge models`)") from None
    return timm


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _install_hint() -> str:
    """timm imports torchvision, whose compiled ops must be built for this very torch (CPU, or the same CUDA)."""
    import torch

    version = torch.__version__
    release, _, variant = version.partition("+")
    major, minor = [*release.split("."), "0"][:2]
    pin = f"==0.{int(minor) + 15}.*" if major == "2" and minor.isdigit() else ""  # 2.9 ↔ 0.24
    index = f" --index-url https://download.pytorch.org/whl/{variant}" if variant else ""
    return (f"install the torchvision built for torch {version} (pip install 'torchvision{pin}'{index}), "
            "then pip install timm; a torchvision built for another torch or CUDA fails on import")


def check_timm_arch(arch: str) -> None:
    """Refuse an unknown timm name at load time, with the closest names timm knows."""
    timm = import_timm(arch)
    name = arch.removeprefix(PREFIX)
    if not timm.is_model(name):
        known = timm.list_models()
        close = suggest(name, known)
        raise TimmError(f"model.arch: timm has no architecture '{name}'{close} "
                        f"({len(known)} known; list them with python -c \"import timm; print(timm.list_models())\")")


def build_timm(arch: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int,
               pretrained: bool = False) -> nn.Module:
    """timm.create_model with this data's class count and input channels; `pretrained` downloads timm's
    weights through its hub code (for users with network access)."""
    check_timm_arch(arch)
    timm = import_timm(arch)
    if len(input_shape) != 3:
        raise TimmError(f"model.arch: {arch} takes images (channels, height, width), but the data is {input_shape}")
    return timm.create_model(arch.removeprefix(PREFIX), pretrained=pretrained, num_classes=num_classes,  # type: ignore[no-any-return]
                             in_chans=input_shape[0], **params)
