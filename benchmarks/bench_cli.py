"""Start-up time of the `dlforge` command against what any torch-importing CLI pays, side by side.

Each command runs as a fresh process (wall clock, median of --repeats, interleaved so load swings
hit every row alike): `python -c pass` (the interpreter floor), `python -c "import torch"` (what
`dlforge --help` cost while cli.py imported torch), `dlforge --help`, `dlforge layers` and
`dlforge serve --help`. Peak memory (max RSS) is read from the child's rusage.

    python benchmarks/bench_cli.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

DLFORGE = shutil.which("dlforge", path=os.path.dirname(sys.executable)) or "dlforge"
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "dlforge --help": [DLFORGE, "--help"],
    "dlforge serve --help": [DLFORGE, "serve", "--help"],
    "dlforge layers": [DLFORGE, "layers"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Seconds and peak MiB of one run of `cmd` (output discarded)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            runs[name].append(timed(cmd))
    print(f"{'command':28} {'median s':>9} {'min s':>7} {'max RSS MiB':>12}   ({args.repeats} runs each)")
    for name, rows in runs.items():
        times = [t for t, _ in rows]
        print(f"{name:28} {statistics.median(times):9.3f} {min(times):7.3f} {max(m for _, m in rows):12.0f}")
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
