"""How many CPU cores this process may really use, and the thread count training takes from it (torch-free).

`os.cpu_count()` is the machine's total; a process pinned by taskset/cpusets or a container limited by a
CPU quota (Kubernetes `limits: {cpu: 2}`) gets far less, and threads beyond its share only wait for
each other.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD" (a container's CPU limit)
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"  # torchrun: worker processes on this machine


def cpu_quota(cpu_max: str) -> float | None:
    """Cores' worth of CPU time a cgroup v2 `cpu.max` allows (None: no limit, or a line we cannot read)."""
    quota, _, period = cpu_max.strip().partition(" ")
    try:
        return int(quota) / int(period or "100000")
    except ValueError:  # "max": unlimited
        return None


def usable_cores() -> int:
    """Cores this process may use: the CPU affinity mask (taskset, cpusets), capped by a cgroup CPU quota
    (a container's `limits: {cpu: 2}`), not the machine's total."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota = cpu_quota(CPU_MAX.read_text()) if CPU_MAX.is_file() else None
    except OSError:
        quota = None
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def training_threads() -> int:
    """torch's intra-op threads for one training process: OMP_NUM_THREADS when set (as torch reads it),
    else its share of the usable cores among the workers torchrun started on this machine (torch's own
    default is one per core of the whole machine)."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, usable_cores() // max(1, int(os.environ.get(LOCAL_WORLD_SIZE, "1"))))
