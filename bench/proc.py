"""Run one contender in a subprocess; measure wall time and peak memory of its process tree."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measurement:
    wall_s: float
    peak_rss_mb: float
    rc: int
    stdout: str
    stderr: str
    # user + system CPU seconds of the process and the descendants it waited for (wait4)
    cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        total += proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    except psutil.Error:
        pass
    return total


def run_measured(
    cmd: Sequence[str] | str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    shell: bool = False,
    poll_s: float = 0.02,
) -> Measurement:
    """Wall time (perf_counter around the process) and peak RSS of its whole tree.

    Peak RSS is the sum of the RSS of the process and all its descendants, polled every
    `poll_s` (so a decompressor in a pipe counts too). The kernel's ru_maxrss of a child
    (`os.wait4`, RUSAGE_CHILDREN) is not used: on Linux it carries over the parent's
    high-water mark from before `exec`, so every child would look as big as this process.
    """
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONPATH", str(REPO))
    if env:
        full_env.update(env)
    out_f = tempfile.NamedTemporaryFile("w+", prefix="moe-bench-", suffix=".out", delete=False)  # noqa: SIM115
    err_f = tempfile.NamedTemporaryFile("w+", prefix="moe-bench-", suffix=".err", delete=False)  # noqa: SIM115
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, shell=shell, env=full_env, cwd=str(cwd or REPO), stdout=out_f, stderr=err_f
    )
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        try:
            ps = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not done.is_set():
            peak = max(peak, _tree_rss(ps))
            time.sleep(poll_s)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    deadline = None if timeout is None else t0 + timeout
    status = 0
    cpu = 0.0
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid != 0:
            cpu = usage.ru_utime + usage.ru_stime
            break
        if deadline is not None and time.perf_counter() > deadline:
            _kill_tree(p.pid)
            pid, status, usage = os.wait4(p.pid, 0)
            cpu = usage.ru_utime + usage.ru_stime
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    th.join()
    out_f.seek(0)
    err_f.seek(0)
    m = Measurement(
        wall_s=wall,
        peak_rss_mb=peak / 2**20,
        rc=p.returncode,
        stdout=out_f.read(),
        stderr=err_f.read(),
        cpu_s=cpu,
    )
    for f in (out_f, err_f):
        f.close()
        os.unlink(f.name)
    return m


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        for c in parent.children(recursive=True):
            c.kill()
        parent.kill()
    except psutil.Error:
        pass


def python_cmd(module: str, *args: str) -> list[str]:
    """`python -m module args...` with this interpreter (the project venv)."""
    return [sys.executable, "-m", module, *args]


def demo_env(data_dir: Path, stays: int) -> dict[str, str]:
    """The environment of a measured pipeline step: the synthetic demo of `stays` stays in
    `data_dir`, offline encoders, and an ephemeral Dagster instance (the user's instance,
    checked for dead runs' pool slots when the definitions load, is not what is measured)."""
    return {
        "MOE_DATA_DIR": str(data_dir),
        "MOE_DEMO_STAYS": str(stays),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MOE_MIMIC_ROOT": "",
        "DAGSTER_HOME": "",
    }
