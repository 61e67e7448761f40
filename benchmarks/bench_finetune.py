"""Transfer learning on digits: pre-train on 0–4, fine-tune on 5–9 with 10 % of their training labels,
against the same model trained from scratch on the same 10 % — both side by side, over several seeds.

Every run goes through dlforge's own `train_run` (the same path as `dlforge train`); the only difference
between the two arms is `model.pretrained` plus `train.freeze` / `unfreeze_at_epoch`.

    python benchmarks/bench_finetune.py [--seeds 5] [--out runs/bench_finetune]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from dlforge.config import parse_config
from dlforge.train.run import train_run

MODEL = {"arch": "cnn_small", "params": {"channels": [16, 32], "hidden": 64}}
FIRST, SECOND = [str(d) for d in range(5)], [str(d) for d in range(5, 10)]


def experiment(name: str, seed: int, data: dict[str, Any], train: dict[str, Any],
               pretrained: str | None = None) -> Any:
    model = {**MODEL, **({"pretrained": pretrained} if pretrained else {})}
    return parse_config({"name": name, "seed": seed, "data": {"dataset": "digits", **data}, "model": model,
                         "train": {"progress": False, **train}, "eval": {"plots": False},
                         "export": {"enabled": False}})


def one_seed(seed: int, out: Path, fraction: float) -> dict[str, float]:
    pre_dir = out / f"pretrain-{seed}"
    pre = train_run(experiment("pretrain", seed, {"classes": FIRST},
                               {"epochs": 15, "batch_size": 32, "optimizer": {"lr": 3e-3}}), pre_dir)
    few = {"classes": SECOND, "train_fraction": fraction}
    common = {"epochs": 20, "batch_size": 16, "optimizer": {"lr": 3e-3}, "scheduler": {"warmup_epochs": 1}}
    scratch = train_run(experiment("scratch", seed, few, common), out / f"scratch-{seed}")
    tuned = train_run(experiment("finetune", seed, few, {**common, "freeze": "backbone", "unfreeze_at_epoch": 3},
                                 str(pre_dir)), out / f"finetune-{seed}")
    return {"pretrain": pre["accuracy"], "scratch": scratch["accuracy"], "finetune": tuned["accuracy"]}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    half = (max(values) - min(values)) / 2
    return f"{100 * mean:5.1f} ± {100 * half:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the 5–9 training labels used")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_finetune"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.out, args.fraction))
        r = rows[-1]
        print(f"seed {seed}: pre-train (0–4) {r['pretrain']:.4f}   5–9 from scratch {r['scratch']:.4f}   "
              f"5–9 fine-tuned {r['finetune']:.4f}", flush=True)
    scratch, tuned = [r["scratch"] for r in rows], [r["finetune"] for r in rows]
    gain = [t - s for s, t in zip(scratch, tuned, strict=True)]
    print(f"\ndigits 5–9, {args.fraction:.0%} of the training labels, test accuracy % over {args.seeds} seeds "
          "(mean ± half-range):")
    print(f"  from scratch            {spread(scratch)}")
    print(f"  fine-tuned from 0–4     {spread(tuned)}")
    print(f"  gain (paired per seed)  {spread(gain)} points; smallest {100 * min(gain):.1f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
