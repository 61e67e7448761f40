"""Data at scale: memory and time to the first step flat in dataset size, loader throughput, folders vs shards.

    python benchmarks/bench_data.py                      # 10k and 100k generated 128x128 JPEGs (~25 min, 2 cores)
    python benchmarks/bench_data.py --sizes 2000 20000   # a quicker look

Generates the images once (`dlforge data shapes`, kept under --root), then prints, side by side in one run:
- one training epoch (`dlforge train`, examples/digits_cnn.yaml's CNN and recipe on 32x32 inputs, data.workers
  auto) on each size: peak RSS
  summed over the whole process tree (trainer + loader workers; PSS too, which counts shared pages once),
  time from process start to the first training step, images/s of the epoch, and the ratio of the largest
  size to the smallest;
- the loader alone (decode + resize, no model): dlforge's train loader against a plain torch DataLoader over
  a PIL dataset doing the same decode and resize (and the naive PIL decode without JPEG draft mode), with 1
  and 2 workers;
- `dlforge data pack` of the largest set, then the same epoch trained from the shards: accuracy and
  images/s against the folder (same seed, same epochs: the samples are the same, so is the model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dlforge.config import DataConfig
from dlforge.data.loaders import train_loader
from dlforge.data.splits import load_data

MODEL_SIZE = (32, 32)


# --- the process-tree memory watcher --------------------------------------------------------------------
class TreeMemory:
    """Peak RSS and PSS summed over a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.root, self.every = psutil.Process(pid), every
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.every)


# --- data ------------------------------------------------------------------------------------------------
def dlforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dlforge", *args], check=True)


def generated(root: Path, n: int, size: int) -> Path:
    out = root / f"shapes-{n}-{size}"
    if not (out / ".complete").is_file():
        started = time.perf_counter()
        dlforge("data", "shapes", "--out", str(out), "--n", str(n), "--size", str(size), "--overwrite")
        (out / ".complete").write_text(f"{time.perf_counter() - started:.1f}")
    return out


def packed(folder: Path) -> tuple[Path, float]:
    out = folder.with_name(folder.name + "-shards")
    if not (out / "index.json").is_file():
        started = time.perf_counter()
        dlforge("data", "pack", str(folder), "--out", str(out))
        (out / ".seconds").write_text(f"{time.perf_counter() - started:.1f}")
    return out, float((out / ".seconds").read_text())


# --- one training epoch in a child process ---------------------------------------------------------------
def experiment(dataset: str, path: Path, epochs: int) -> dict[str, Any]:
    return {"name": "bench_data", "seed": 0,
            "data": {"dataset": dataset, "params": {"path": str(path), "image_size": list(MODEL_SIZE)}},
            "model": {"arch": "cnn_small", "params": {"channels": [32, 64], "hidden": 128, "dropout": 0.25}},
            "train": {"epochs": epochs, "batch_size": 64, "progress": False,  # examples/digits_cnn.yaml's recipe
                      "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001},
                      "scheduler": {"name": "cosine", "warmup_epochs": 0.3}, "label_smoothing": 0.05},
            "eval": {"plots": False}}


def child_train(config: Path, out: Path, report: Path) -> None:
    """Runs in the child: train, noting when the first training step begins (the first batch is in hand)."""
    import dlforge.train.step as step
    from dlforge.config import load_config
    from dlforge.train.run import train_run

    first: list[float] = []
    real = step.steps_optimizer

    def noting(*args: Any) -> bool:
        if not first:
            first.append(time.time())
        return real(*args)

    step.steps_optimizer = noting  # type: ignore[assignment]
    metrics = train_run(load_config(config), out, overwrite=True)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    started = psutil.Process().create_time()
    report.write_text(json.dumps({"first_step_s": first[0] - started, "accuracy": metrics["accuracy"],
                                  "images_per_s": history[-1]["samples_per_s"],
                                  "epoch_s": history[-1]["time_s"]}))


def train_epoch_measured(work: Path, name: str, dataset: str, path: Path, epochs: int) -> dict[str, Any]:
    config, report = work / f"{name}.yaml", work / f"{name}.json"
    config.write_text(yaml.safe_dump(experiment(dataset, path, epochs)))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, os.cpu_count() or 1))}
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(config), str(work / name), str(report)],
                            env=env)
    with TreeMemory(proc.pid) as memory:
        code = proc.wait()
    if code:
        raise SystemExit(f"training {name} failed ({code})")
    return {**json.loads(report.read_text()), "peak_rss_gb": memory.peak_rss / 1e9,
            "peak_pss_gb": memory.peak_pss / 1e9}


# --- the loader alone ------------------------------------------------------------------------------------
class PilFolder(Dataset[tuple[torch.Tensor, int]]):
    """The plain baseline: PIL open, convert, resize, to a tensor — what a user would write."""

    def __init__(self, files: list[Path], targets: list[int], draft: bool) -> None:
        self.files, self.targets, self.draft = files, targets, draft

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            if self.draft:
                image.draft("RGB", (MODEL_SIZE[1], MODEL_SIZE[0]))
            pixels = np.asarray(image.convert("RGB").resize((MODEL_SIZE[1], MODEL_SIZE[0]), Image.Resampling.BILINEAR),
                                dtype=np.float32) / 255.0
        return torch.from_numpy(pixels.transpose(2, 0, 1)), self.targets[i]


def images_per_s(loader: Any, limit: int) -> float:
    seen, started = 0, None
    for batch_index, (x, _) in enumerate(loader):
        if batch_index == 1:  # from the second batch: worker start-up is not throughput
            started, seen = time.perf_counter(), 0
        seen += len(x)
        if seen >= limit and started is not None:
            break
    assert started is not None
    return seen / (time.perf_counter() - started)


def loader_throughput(folder: Path, limit: int) -> dict[str, dict[int, float]]:
    bundle = load_data(DataConfig(dataset="image_folder", params={"path": str(folder),
                                                                  "image_size": list(MODEL_SIZE)}), seed=0)
    train = bundle.train
    files = [train.dataset.path(i) for i in train.indices]  # type: ignore[attr-defined]
    targets = [int(train.dataset.targets[i]) for i in train.indices]  # type: ignore[attr-defined]
    out: dict[str, dict[int, float]] = {"dlforge": {}, "plain (PIL + draft)": {}, "plain (PIL, naive)": {}}
    for workers in (1, 2):
        for _ in range(2):  # interleaved, best of two: the machine is noisy
            ours = train_loader(train, 128, 0, 1, seed=0, workers=workers)
            ours.sampler.set_epoch(1)
            for name, loader in (("dlforge", ours),
                                 ("plain (PIL + draft)", DataLoader(PilFolder(files, targets, True), 128, shuffle=True,
                                                                    num_workers=workers, prefetch_factor=4)),
                                 ("plain (PIL, naive)", DataLoader(PilFolder(files, targets, False), 128,
                                                                   shuffle=True, num_workers=workers,
                                                                   prefetch_factor=4))):
                out[name][workers] = max(out[name].get(workers, 0.0), images_per_s(loader, limit))
                del loader
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--root", type=Path, default=Path("/tmp/dlforge-bench-data"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--loader-images", type=int, default=4000, help="images timed per loader measurement")
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_train(*args.child)
        return
    args.root.mkdir(parents=True, exist_ok=True)
    folders = {n: generated(args.root, n, args.image_size) for n in args.sizes}
    work = args.root / "runs"
    work.mkdir(exist_ok=True)
    print(f"\n{os.cpu_count()} cores, torch {torch.__version__}; {args.image_size}x{args.image_size} JPEGs, model "
          f"input {MODEL_SIZE[0]}x{MODEL_SIZE[1]}, {args.epochs} epoch(s), data.workers auto\n")

    runs = {n: train_epoch_measured(work, f"folder-{n}", "image_folder", folders[n], args.epochs) for n in args.sizes}
    print(f"{'images':>9} {'peak RSS tree':>14} {'peak PSS tree':>14} {'first step':>11} {'images/s':>9} "
          f"{'test acc':>9}")
    for n, r in runs.items():
        print(f"{n:>9,} {r['peak_rss_gb']:>11.2f} GB {r['peak_pss_gb']:>11.2f} GB {r['first_step_s']:>9.1f} s "
              f"{r['images_per_s']:>9.0f} {r['accuracy']:>9.4f}")
    small, large = runs[min(args.sizes)], runs[max(args.sizes)]
    rss_ratio = large["peak_rss_gb"] / small["peak_rss_gb"]
    print(f"ratio {max(args.sizes):,}/{min(args.sizes):,}: peak RSS {rss_ratio:.2f}x, "
          f"peak PSS {large['peak_pss_gb'] / small['peak_pss_gb']:.2f}x, "
          f"time to first step {large['first_step_s'] / small['first_step_s']:.2f}x")

    print(f"\nloader alone, decode + resize to {MODEL_SIZE[0]}x{MODEL_SIZE[1]}, batch 128 (images/s, best of 2):")
    speeds = loader_throughput(folders[min(args.sizes)], args.loader_images)
    for name, by_workers in speeds.items():
        print(f"  {name:<22} 1 worker {by_workers[1]:>7.0f}   2 workers {by_workers[2]:>7.0f}   "
              f"2/1 {by_workers[2] / by_workers[1]:.2f}x")
    base = speeds["plain (PIL + draft)"]
    print(f"  dlforge / plain (same decode): 1 worker {speeds['dlforge'][1] / base[1]:.2f}x, "
          f"2 workers {speeds['dlforge'][2] / base[2]:.2f}x")

    n = max(args.sizes)
    shards, pack_s = packed(folders[n])
    sharded = train_epoch_measured(work, f"shards-{n}", "shards", shards, args.epochs)
    folder = runs[n]
    print(f"\n{n:,} images packed into shards in {pack_s:.0f} s ({n / pack_s:.0f} images/s)")
    print(f"  {'':<8} {'test acc':>9} {'images/s':>9} {'peak RSS tree':>14} {'first step':>11}")
    for name, r in (("folder", folder), ("shards", sharded)):
        print(f"  {name:<8} {r['accuracy']:>9.4f} {r['images_per_s']:>9.0f} {r['peak_rss_gb']:>11.2f} GB "
              f"{r['first_step_s']:>9.1f} s")
    print(f"  accuracy difference {100 * abs(sharded['accuracy'] - folder['accuracy']):.2f} points; "
          f"images/s shards/folder {sharded['images_per_s'] / folder['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
