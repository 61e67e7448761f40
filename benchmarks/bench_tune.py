"""`dlforge tune examples/digits_tune.yaml`, then the best config against an SVC on the same splits.

The study picks a config by validation accuracy on one split (seed 0). This script then trains that
config on 5 stratified splits (seeds 0–4: 70 % train, 15 % validation, 15 % test) and prints its test
accuracy beside scikit-learn's SVC(C=10, gamma="scale") fitted on the same training + validation samples
(85 %) and scored on the same test samples. The default digits CNN runs beside them as the baseline.

    python benchmarks/bench_tune.py [--parallel 2] [--trials 20] [--out runs/bench_tune] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from sklearn.svm import SVC

from dlforge.data.samples import take
from dlforge.data.splits import load_data
from dlforge.experiment import load_experiment
from dlforge.train.run import train_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_tune.yaml"


def run_study(out: Path, parallel: int, trials: int) -> float:
    """The study through the CLI, as a user runs it; returns its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlforge", "tune", str(EXAMPLE), "--out", str(out), "--parallel",
                    str(parallel), "--trials", str(trials)], check=True)
    return time.perf_counter() - started


def cnn_accuracy(config: Path, seed: int, out: Path) -> float:
    cfg = load_experiment(config, [f"seed={seed}", "train.progress=false", "export.enabled=false",
                                   "eval.plots=false"])
    return float(train_run(cfg, out, overwrite=True)["accuracy"])


def svc_accuracy(config: Path, seed: int) -> float:
    cfg = load_experiment(config, [f"seed={seed}"])
    bundle = load_data(cfg.data, seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = take(bundle.train), take(bundle.val), take(bundle.test)
    fit_x = torch.cat([x_train, x_val]).flatten(1).numpy()
    fit_y = torch.cat([y_train, y_val]).numpy()
    svc = SVC(C=10, gamma="scale").fit(fit_x, fit_y)
    return float(svc.score(x_test.flatten(1).numpy(), y_test.numpy()))


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tune"))
    parser.add_argument("--skip-study", action="store_true", help="reuse the study already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    study_dir = args.out / "study"
    seconds = None if args.skip_study else run_study(study_dir, args.parallel, args.trials)
    best = study_dir / "best.yaml"
    rows: dict[str, list[float]] = {"default digits CNN": [], "tuned CNN (best.yaml)": [], "SVC(C=10)": []}
    for seed in range(args.seeds):
        rows["default digits CNN"].append(cnn_accuracy(EXAMPLE, seed, args.out / f"default-{seed}"))
        rows["tuned CNN (best.yaml)"].append(cnn_accuracy(best, seed, args.out / f"tuned-{seed}"))
        rows["SVC(C=10)"].append(svc_accuracy(EXAMPLE, seed))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items()), flush=True)
    print(f"\ndigits, test accuracy over {args.seeds} stratified 15 % splits (mean ± sd):")
    for name, values in rows.items():
        print(f"  {name:<24}{spread(values)}")
    tuned, svc = rows["tuned CNN (best.yaml)"], rows["SVC(C=10)"]
    print(f"  tuned − SVC               {statistics.mean(tuned) - statistics.mean(svc):+.4f} "
          f"(ratio {statistics.mean(tuned) / statistics.mean(svc):.4f})")
    if seconds is not None:
        print(f"study: {args.trials} trials, --parallel {args.parallel}, {seconds / 60:.1f} min wall")


if __name__ == "__main__":
    main()
