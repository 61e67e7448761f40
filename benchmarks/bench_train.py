"""Training throughput: dlforge's loop vs a hand-written PyTorch loop, 1 vs N workers via `--nproc`, and the
cost of experiment tracking (train.loggers off vs csv / tensorboard / mlflow, side by side).

    python benchmarks/bench_train.py                    # defaults: digits, cnn_small [16, 32], batch 64, 10 epochs
    python benchmarks/bench_train.py --epochs 5 --nproc 1 2 --skip-ddp
    python benchmarks/bench_train.py --tracking --epochs 20 --skip-ddp

(1) runs both loops in this process, alternating, on the same model (dlforge.nn.build_model), data
tensors, batch size, epochs and optimiser, and keeps each one's best epoch. (2) launches
`dlforge train --nproc N` for each N and reads rank 0's samples/s from history.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from dlforge.config import ExperimentConfig, parse_config
from dlforge.data.splits import load_data
from dlforge.train import dist
from dlforge.train.loop import build_trainer
from dlforge.train.progress import EpochProgress
from dlforge.train.run import make_model
from dlforge.train.step import train_epoch
from dlforge.train.tracking import Tracking
from dlforge.train.trainer import LoopState

SRC = Path(__file__).resolve().parents[1] / "src"


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    return {"name": "bench", "data": {"dataset": "digits", "val_fraction": 0.0995},
            "model": {"arch": "cnn_small", "params": {"channels": args.channels, "hidden": 64, "dropout": 0.0}},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False,
                      "optimizer": {"name": "adamw", "lr": 1e-3}, "scheduler": {"name": "none"}},
            "eval": {"plots": False}, "export": {"enabled": False}}


def plain_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, loader: DataLoader) -> float:
    """The hand-written baseline: samples/s of one epoch."""
    model.train()
    seen, started = 0, time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(x)
    return seen / (time.perf_counter() - started)


def loop_vs_plain(cfg: ExperimentConfig) -> tuple[float, float]:
    """Best samples/s over the epochs of (dlforge's train_epoch, the plain loop), interleaved epoch by epoch."""
    bundle = load_data(cfg.data, cfg.seed)
    ctx = dist.setup("cpu")
    trainer = build_trainer(cfg, bundle, make_model(cfg, bundle), ctx)
    plain = make_model(cfg, bundle)
    opt = torch.optim.AdamW(plain.parameters(), lr=cfg.train.optimizer.lr)
    loader = DataLoader(TensorDataset(*bundle.train.tensors), batch_size=cfg.train.batch_size, shuffle=True)
    state, ours, theirs = LoopState(), [], []
    with EpochProgress(False, cfg.train.epochs) as bar:
        for _ in range(cfg.train.epochs):
            theirs.append(plain_epoch(plain, opt, loader))
            ours.append(train_epoch(trainer, state, bar)["samples_per_s"])
            state.epoch += 1
    return max(ours), max(theirs)


def tracking_cost(cfg: ExperimentConfig, names: list[list[str]], folder: Path) -> list[float]:
    """Median samples/s of `train_epoch` for each logger list, one trainer each, interleaved epoch by epoch
    (per-step logging every train.log_every_steps, the loop's only tracking work inside an epoch)."""
    bundle = load_data(cfg.data, cfg.seed)
    ctx = dist.setup("cpu")
    trainers, states = [], []
    for i, loggers in enumerate(names):
        torch.manual_seed(cfg.seed)
        trainer = build_trainer(cfg, bundle, make_model(cfg, bundle), ctx)
        trainer.tracking = Tracking(loggers, cfg.train.log_every_steps, cfg.train.batch_size)
        (folder / str(i)).mkdir()
        trainer.tracking.start(cfg, folder / str(i), resume=False, step=0)
        trainers.append(trainer)
        states.append(LoopState())
    speeds: list[list[float]] = [[] for _ in names]
    with EpochProgress(False, cfg.train.epochs) as bar:
        for _ in range(cfg.train.epochs):
            for trainer, state, speed in zip(trainers, states, speeds, strict=True):
                speed.append(train_epoch(trainer, state, bar)["samples_per_s"])
                state.epoch += 1
    for trainer in trainers:
        trainer.tracking.close()
    return [statistics.median(s) for s in speeds]


def workers_throughput(raw: dict[str, Any], nproc: int | None, threads: int) -> float:
    """Rank 0's best epoch samples/s (global samples) of `dlforge train --nproc N` (None: one plain process)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-m", "dlforge", "train", str(config), "--out", f"{tmp}/run",
                        *(["--nproc", str(nproc)] if nproc else [])], env=env, check=True, stdout=subprocess.DEVNULL)
        history = [json.loads(line) for line in (Path(tmp) / "run/history.jsonl").read_text().splitlines()]
    return max(row["samples_per_s"] for row in history)


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="an epoch is ~0.15 s here: best of several")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="worker counts for the DDP column")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (and per worker)")
    parser.add_argument("--skip-ddp", action="store_true", help="only the in-process loop comparison")
    parser.add_argument("--tracking", action="store_true", help="also: loggers off vs csv / tensorboard / mlflow")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads)  # several threads per process were ~10x slower on the shared 2-core box
    raw = experiment(args)
    ours, plain = loop_vs_plain(parse_config(raw))
    rows = [("run", "samples/s", "vs plain loop"), ("plain PyTorch loop", f"{plain:.0f}", "1.00"),
            ("dlforge loop (in process)", f"{ours:.0f}", f"{ours / plain:.2f}")]
    if not args.skip_ddp:  # a fresh `dlforge train` process is the fair baseline for torchrun's workers
        alone = workers_throughput(raw, None, args.threads)
        rows.append(("dlforge train (one process, no torchrun)", f"{alone:.0f}", f"{alone / plain:.2f}"))
        for n in args.nproc:
            speed = workers_throughput(raw, n, args.threads)
            rows.append((f"dlforge train --nproc {n}", f"{speed:.0f}",
                         f"{speed / plain:.2f} ({speed / alone:.2f} of one process)"))
    print(f"digits, cnn_small {args.channels}, global batch {args.batch_size}, {args.epochs} epochs, "
          f"{cores} CPU cores, {args.threads} thread(s) per process, torch {torch.__version__}; best epoch of each")
    print(table(rows))
    print(f"dlforge loop overhead vs plain: {100 * (plain / ours - 1):+.1f}%")
    if args.tracking:
        kinds = [[], ["csv"], ["tensorboard"], ["mlflow"], ["csv", "tensorboard", "mlflow"]]
        with tempfile.TemporaryDirectory() as tmp:
            speeds = tracking_cost(parse_config(raw), kinds, Path(tmp))
        rows = [("train.loggers (every 10 steps)", "samples/s", "time vs off")]
        rows += [(str(k), f"{v:.0f}", f"{speeds[0] / v:.3f}") for k, v in zip(kinds, speeds, strict=True)]
        print(f"\ntracking cost: median epoch of {args.epochs}, interleaved, one trainer per setting")
        print(table(rows))


if __name__ == "__main__":
    main()
