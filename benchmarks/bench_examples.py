"""Wall time of every example as shipped: `dlforge run examples/X.yaml` (and the data each needs), one after
another, with the default settings (threads included) and the headline test metric of each.

    python benchmarks/bench_examples.py [--out runs/bench_examples] [--only digits_cnn text_langid …]

Run it from a fresh clone's root after `make run` (or `pip install -e .`): the README's example-time table is
its output. The load average before and after each run is printed too, since this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (example, commands it needs first, the metric to show); in order: digits_finetune needs digits_pretrain's run.
EXAMPLES: list[tuple[str, list[list[str]], str]] = [
    ("digits_cnn", [], "accuracy"),
    ("digits_layers", [], "accuracy"),
    ("digits_augment", [], "accuracy"),
    ("digits_resnet", [], "accuracy"),
    ("digits_pretrain", [], "accuracy"),
    ("digits_finetune", [], "accuracy"),
    ("sequence_gru", [], "accuracy"),
    ("digits_gan", [], "fid"),
    ("digits_denoise", [], "psnr"),
    ("text_langid", [], "accuracy"),
    ("translate_numbers", [], "bleu"),
    ("spoken_digits", [["data", "spoken-digits", "--out", "data/spoken_digits"]], "accuracy"),
    ("digits_tune", [], "best_value"),
]


def dlforge(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dlforge", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_examples"))
    parser.add_argument("--only", nargs="*", help="example names (default: all)")
    args = parser.parse_args()
    print(f"{'example':<20}{'prepare':>10}{'run':>10}  metric            load before/after", flush=True)
    for name, prepare, metric in EXAMPLES:
        if args.only and name not in args.only:
            continue
        load = os.getloadavg()[0]
        ready = 0.0
        for command in prepare:
            target = ROOT / command[-1]
            if not target.exists():
                ready += dlforge(*command)
        out = ROOT / "runs" / ("digits_0_4" if name == "digits_pretrain" else f"{name}")
        if name == "digits_tune":
            seconds = dlforge("tune", f"examples/{name}.yaml", "--out", str(args.out / name), "--parallel", "2")
            value = json.loads((args.out / name / "study.json").read_text()).get(metric)
        else:
            run_dir = out if name == "digits_pretrain" else args.out / name
            seconds = dlforge("run", f"examples/{name}.yaml", "--out", str(run_dir), "--overwrite")
            value = json.loads((run_dir / "metrics.json").read_text()).get(metric)
        shown = f"{metric} {value:.4f}" if isinstance(value, float) else f"{metric} {value}"
        print(f"{name:<20}{ready:>9.0f}s{seconds:>9.0f}s  {shown:<18}{load:.1f} / {os.getloadavg()[0]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
