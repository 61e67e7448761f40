"""Reading starting weights for `model.pretrained`: a run directory, a model package, a .safetensors file
or a Hugging Face style folder — never a pickle.

Packages are hash-verified like everywhere else; labels come along when the source knows them, so a
classifier trained on other classes is recognised even when the class count is the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from dlforge.config import ModelConfig
from dlforge.nn.pretrained import PretrainedError
from dlforge.nn.timm_arch import build_timm, is_timm

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
HF_INDEX = "model.safetensors.index.json"


@dataclass
class WeightSource:
    state: dict[str, Tensor]
    labels: list[str] | None
    description: str  # e.g. "runs/pre (run directory)"


def _pickle_refusal(path: Path) -> PretrainedError:
    return PretrainedError(
        f"model.pretrained.source: {path} is a pickle checkpoint, which can run arbitrary code when loaded; "
        "dlforge reads safetensors only. Convert it once where you trust it: python -c \"import torch; "
        "from safetensors.torch import save_file; save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\"")


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError(f"model.pretrained.source: {path}: not a readable safetensors file ({exc})") from None


def _read_sharded(folder: Path) -> dict[str, Tensor]:
    """A Hugging Face sharded checkpoint: the index maps each tensor to one of its shard files."""
    try:
        weight_map = json.loads((folder / HF_INDEX).read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PretrainedError(f"model.pretrained.source: {folder / HF_INDEX}: not a valid index ({exc})") from None
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:
            raise PretrainedError(f"model.pretrained.source: {folder / HF_INDEX}: shard {shard!r} is not a plain "
                                  "file name in the folder")
        state.update(read_safetensors(folder / shard))
    return state


def _labels_of_run(folder: Path) -> list[str] | None:
    try:
        labels = json.loads((folder / "run.json").read_text())["labels"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return [str(x) for x in labels] if isinstance(labels, list) else None


def _read_folder(folder: Path) -> WeightSource:
    if (folder / "manifest.json").is_file():
        from dlforge.export.package import PackageError, load_package

        try:
            package = load_package(folder)  # verifies every sha256
        except PackageError as exc:
            raise PretrainedError(f"model.pretrained.source: {exc}") from None
        state = read_safetensors(package.path("model.safetensors"))
        return WeightSource(state, list(package.manifest.labels), f"{folder} (model package)")
    if (folder / "model.safetensors").is_file():
        kind = "run directory" if (folder / "run.json").is_file() else "folder"
        state = read_safetensors(folder / "model.safetensors")
        return WeightSource(state, _labels_of_run(folder), f"{folder} ({kind})")
    if (folder / HF_INDEX).is_file():
        return WeightSource(_read_sharded(folder), None, f"{folder} (sharded safetensors)")
    if (folder / "run.json").is_file():
        raise PretrainedError(f"model.pretrained.source: {folder}: a run directory without model.safetensors "
                              "(training did not finish); finish it with dlforge train … --resume")
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise _pickle_refusal(pickles[0])
    raise PretrainedError(f"model.pretrained.source: {folder}: no model.safetensors here (expected a run "
                          "directory, a model package, or a folder with model.safetensors)")


def read_weights(source: str) -> WeightSource:
    """The tensors of `source` (a path); PretrainedError, naming the path and the fix, for anything else."""
    path = Path(source).expanduser()
    if not path.exists():
        raise PretrainedError(f"model.pretrained.source: {path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise _pickle_refusal(path)
    return WeightSource(read_safetensors(path), None, f"{path} (safetensors file)")


def pretrained_weights(model: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> WeightSource:
    """The weights `model.pretrained` names: a path, or 'timm' for timm's own (hub) weights of the arch."""
    assert model.pretrained is not None
    if model.pretrained.source != "timm":
        return read_weights(model.pretrained.source)
    if not is_timm(model.arch):
        raise PretrainedError("model.pretrained.source: 'timm' loads timm's published weights and needs "
                              f"model.arch: timm/<name> (this model is {model.arch or 'a layer list'})")
    module = build_timm(model.arch or "", model.params, input_shape, num_classes, pretrained=True)
    return WeightSource(module.state_dict(), None, f"timm's weights for {model.arch}")
