"""Self-describing, atomic, pickle-free checkpoints.

A checkpoint is a folder `checkpoints/epoch-NNNN/` (or `epoch-NNNN-step-SSSSSSSSS/` inside an epoch)
holding `model.safetensors` (and `best.safetensors`) plus `state.pt`: optimiser, scheduler, RNG,
counters, history, the spec and, inside an epoch, each rank's data loader position; all plain tensors
and containers, loaded with `weights_only=True`. It is written to a temporary folder and renamed into
place, so a kill at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT_VERSION = 1


def _contiguous(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_weights(state: dict[str, Tensor], path: Path) -> None:
    """Atomic safetensors write (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(_contiguous(state), str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


def save_checkpoint(ckpt_dir: Path, epoch: int, model_state: dict[str, Tensor],
                    best_state: dict[str, Tensor] | None, state: dict[str, Any], keep: int = 2,
                    step: int | None = None) -> Path:
    """`epoch-NNNN` after `epoch` complete epochs; `epoch-NNNN-step-SSSSSSSSS` inside the next one, at
    optimizer step `step` (names sort in training order)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}" if step is None else f"epoch-{epoch:04d}-step-{step:09d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
    if best_state is not None:
        save_file(_contiguous(best_state), str(tmp / "best.safetensors"))
    torch.save({**state, "format_version": FORMAT_VERSION, "epoch": epoch}, tmp / "state.pt")
    if final.exists():  # a rerun of the same epoch replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of a killed write are ignored)."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob("epoch-*") if (p / "state.pt").is_file())


def describe_checkpoint(path: Path | None) -> str:
    """Where a checkpoint stands, for people: 'after epoch 3' or 'at step 120, inside epoch 4'."""
    if path is None:
        return "after epoch 0"
    epoch, _, step = path.name.removeprefix("epoch-").partition("-step-")
    return f"at step {int(step)}, inside epoch {int(epoch) + 1}" if step else f"after epoch {int(epoch)}"


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict[str, Any]]:
    """(model weights, best weights or None, state); never unpickles arbitrary objects."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    best = path / "best.safetensors"
    return load_weights(path / "model.safetensors"), load_weights(best) if best.is_file() else None, state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
