"""A real local Ray cluster for tests and benchmarks: `ray start --head` on free ports, in its own session.

The session id finds every process of the cluster, whoever its parent is, so stopping it ends exactly those
(`ray stop` would end every Ray process on the machine, other clusters included).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.serve_helpers import free_port

SRC = str(Path(__file__).resolve().parents[1] / "src")
RAY = str(Path(sys.executable).parent / "ray")
START_S = 240  # generous: a loaded 2-core machine starts Ray slowly
AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def session_pids(sid: int) -> dict[int, str]:
    """Live processes of one session (pid → command line): the cluster's, whoever their parent is."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(session) == sid and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def stop_session(sid: int) -> None:
    """Ends every process of the cluster's session (not `ray stop`: that stops every Ray process on the machine)."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 20.0)):  # a test cluster: no state to save
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


def start_head(temp: str) -> tuple[subprocess.Popen[bytes], str, bytes]:
    """`ray start --head` on free ports, in its own session (so its processes can be found and ended)."""
    gcs = free_port()
    ports = {f"--{name}": str(free_port()) for name in (
        "dashboard-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "metrics-export-port",
        "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")}
    cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=4",
           "--include-dashboard=false", "--include-log-monitor=false", "--disable-usage-stats", f"--temp-dir={temp}",
           "--object-store-memory=100000000", *(f"{k}={v}" for k, v in ports.items())]
    env = {**os.environ, "PYTHONPATH": SRC, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = head.communicate(timeout=START_S)
    except subprocess.TimeoutExpired:
        head.kill()
        output, _ = head.communicate()
    return head, f"127.0.0.1:{gcs}", output


@contextlib.contextmanager
def ray_head() -> Iterator[tuple[str, int]]:
    """A head node on free 127.0.0.1 ports; yields (GCS address, session id); always ends every process of it."""
    temp = tempfile.mkdtemp(prefix="dlf-ray-", dir="/tmp")  # short: Ray's socket paths live under it
    sessions: list[int] = []
    # Token auth with a token of our own, for the head and every client started meanwhile (they inherit the
    # environment): deterministic whatever ~/.ray/auth_token holds, and nobody else can join the cluster.
    saved = {key: os.environ.get(key) for key in AUTH}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    try:
        # Ray gives its raylet a fixed 30 s to register; on an overloaded machine a start can miss that, so try
        # again (each failed head's processes are ended first).
        for _attempt in range(3):
            head, address, output = start_head(temp)
            sessions.append(head.pid)
            if head.returncode == 0:
                break
            stop_session(head.pid)
        if head.returncode != 0:
            raise RuntimeError(f"ray start --head failed 3 times: {output.decode()[-3000:]}")
        yield address, head.pid
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for sid in sessions:
            stop_session(sid)
        left = {pid: cmd for sid in sessions for pid, cmd in session_pids(sid).items()}
        shutil.rmtree(temp, ignore_errors=True)
        if left:
            raise RuntimeError(f"processes left behind: {left}")
