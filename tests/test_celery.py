"""A real Celery run: redis-server on 127.0.0.1, two Celery workers started from
deploy/celery, and the note and X-ray embedding backfills (one run per partition) plus the
`embed` job through dagster-celery's executor, on a small demo cohort.

One backfill of all 26 partitions, with a fault in the middle: the second worker is
SIGKILLed right after it starts its second step. Asserted:
- every partition ran in one of the two workers, and both completed partitions (their pids
  are the pids of the runs' STEP_START events);
- the run whose step died waits; terminated, it is the only one that failed; run again, it
  completes (in the surviving worker);
- the embedding cache (every shard file) and the unpartitioned outputs of `embed` are
  byte-identical to an in-process run, with every vector exactly once.

Skips, saying why, when `redis-server` (Debian package redis-server; .ci/run installs it),
dagster-celery or the redis client is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize

from plumbing.resources import DuckDBSettings, ProjectResource
from tests.reliability_helpers import REPO, VENV_BIN, make_home, run_env

REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        REDIS is None,
        reason="redis-server is not installed (Debian: apt-get install redis-server; "
        ".ci/run installs it)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("dagster_celery") is None
        or importlib.util.find_spec("redis") is None,
        reason="dagster-celery and redis come with the dev extra (pip install -e '.[dev]')",
    ),
]

DEMO_STAYS = 40
DRIVER = REPO / "tests" / "celery_driver.py"
EXECUTOR_YAML = REPO / "deploy" / "celery" / "executor.yaml"
NOTE_BUCKETS = [f"{i:02d}" for i in range(16)]
CXR_FOLDERS = [f"p{i}" for i in range(10, 20)]
BACKFILL = [f"note_embedding_backfill:{b}" for b in NOTE_BUCKETS] + [
    f"cxr_embedding_backfill:{f}" for f in CXR_FOLDERS
]
NOTE_CFG = {"device": "cpu", "batch_size": 16}
CXR_CFG = {"device": "cpu", "batch_size": 8, "num_workers": 0}
RUN_CONFIG = {
    "note_embedding_backfill": {"ops": {"note_embedding_cache": {"config": NOTE_CFG}}},
    "cxr_embedding_backfill": {"ops": {"cxr_embedding_cache": {"config": CXR_CFG}}},
    "embed": {
        "ops": {"note_embeddings": {"config": NOTE_CFG}, "cxr_embeddings": {"config": CXR_CFG}}
    },
}
# what `embed` writes: byte-compared between the Celery and the in-process run
OUTPUTS = ["note_embeddings.parquet", "ehr_vectors.parquet", "ehr_vectors.stats.json",
           "multimodal_dataset.parquet"]  # fmt: skip


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cohort_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo profile's raw files, staging and cohort tables for DEMO_STAYS stays."""
    from pipelines.definitions import defs

    data = tmp_path_factory.mktemp("cohort") / "data"
    result = materialize(
        list(defs.assets or []),
        selection=AssetSelection.groups("sources", "staging", "cohort"),
        resources={
            "project": ProjectResource(data_dir=str(data)),
            "duckdb": DuckDBSettings(memory_limit="1GB", threads=1),
        },
        run_config={"ops": {"mimic_raw": {"config": {"demo_stays": DEMO_STAYS}}}},
    )
    assert result.success
    return data


@pytest.fixture(scope="module")
def in_process(cohort_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: `embed` with the in-process executor, no backfill."""
    root = tmp_path_factory.mktemp("in_process")
    data = root / "data"
    shutil.copytree(cohort_data, data)
    cfg = {"embed": {**RUN_CONFIG["embed"], "execution": {"config": {"in_process": {}}}}}
    res = _drive(root, data, ["embed"], code="pipelines.definitions", config=cfg, env={})
    assert res["embed"]["exit"] == 0
    return data


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """redis-server on a free loopback port, no persistence; stopped at the end."""
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen(
        [str(REDIS), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=(folder / "redis.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("redis-server did not answer on 127.0.0.1")
    try:
        yield {
            "MOE_CELERY_BROKER": f"redis://127.0.0.1:{port}/0",
            "MOE_CELERY_BACKEND": f"redis://127.0.0.1:{port}/1",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(root: Path, data: Path, extra: dict[str, str]) -> dict[str, str]:
    env = run_env(data, root / "dagster_home", **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    return env


def _drive(
    root: Path,
    data: Path,
    runs: list[str],
    code: str = "deploy/definitions.py",
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    concurrency: int = 3,
    wait: bool = True,
) -> Any:
    """tests/celery_driver.py over `runs`; its result, or the process when wait=False."""
    make_home(root)
    out = root / f"driver_{time.monotonic_ns()}.json"
    cfg = root / f"config_{time.monotonic_ns()}.json"
    cfg.write_text(json.dumps(config or RUN_CONFIG))
    cmd = [sys.executable, str(DRIVER), "--code", code, "--config", str(cfg),
           "--concurrency", str(concurrency), "--out", str(out), *runs]  # fmt: skip
    log = (root / "driver.log").open("ab")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(root, data, env or {}), stdout=log, stderr=subprocess.STDOUT
    )
    if not wait:
        proc.out = out  # type: ignore[attr-defined]
        return proc
    proc.wait(timeout=900)
    return json.loads(out.read_text())


class Worker:
    """`dagster-celery worker start` from deploy/celery, solo pool: the step runs in the
    Celery process itself, whose pid the step events carry."""

    def __init__(self, name: str, root: Path, data: Path, broker: dict[str, str]) -> None:
        self.name = name
        log = (root / f"worker_{name}.log").open("ab")
        self.cli = subprocess.Popen(
            [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
             "-y", str(EXECUTOR_YAML), "-q", "gpu,dagster", "-n", name,
             "--", "--pool", "solo"],
            cwd=REPO, env=_env(root, data, {**broker, "MOE_EXECUTOR": "celery"}),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.pid = 0

    def celery_pid(self) -> int:
        if not self.pid:
            kids = psutil.Process(self.cli.pid).children()
            self.pid = kids[0].pid if kids else 0
        return self.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.cli.pid, signal.SIGKILL)
        self.cli.wait(timeout=60)


@contextlib.contextmanager
def workers(root: Path, data: Path, broker: dict[str, str], n: int = 2) -> Iterator[list[Worker]]:
    from celery import Celery

    make_home(root)
    _instance(root).dispose()  # create the SQLite storage before two workers race to do it
    ws = [Worker(f"w{i + 1}", root, data, broker) for i in range(n)]
    app = Celery(broker=broker["MOE_CELERY_BROKER"], backend=broker["MOE_CELERY_BACKEND"])
    try:
        deadline = time.monotonic() + 180
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = {k.split("@")[0] for r in app.control.ping(timeout=1.0) for k in r}
            if names >= {w.name for w in ws}:
                break
            assert all(w.cli.poll() is None for w in ws), "a worker exited at start"
        assert names >= {w.name for w in ws}, f"workers not up: {names}"
        assert all(w.celery_pid() for w in ws)
        yield ws
    finally:
        for w in ws:
            w.kill()


def _instance(root: Path) -> DagsterInstance:
    home = root / "dagster_home"
    return DagsterInstance.from_config(str(home))


def _step_pids(instance: DagsterInstance, run_id: str) -> set[int]:
    """pids of the processes that executed the run's steps (STEP_START events)."""
    return {
        int(e.dagster_event.pid)  # type: ignore[union-attr,arg-type]
        for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    }


def _step_outcomes(instance: DagsterInstance, run_id: str) -> int:
    """How many of the run's steps have succeeded or failed."""
    return sum(
        len(instance.all_logs(run_id, of_type=t))
        for t in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE)
    )


def _cache(data: Path) -> dict[str, Any]:
    """Per cache folder: shard files' bytes (sorted), and key -> (ok, vector bytes)."""
    out: dict[str, Any] = {}
    for folder in sorted(p for p in (data / "cache").glob("*/*") if p.is_dir()):
        files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
        keys: list[str] = []
        vectors: dict[str, tuple[bool, bytes | None]] = {}
        for f in files:
            t = pq.read_table(f)
            for k, ok, v in zip(*(t.column(c).to_pylist() for c in ("key", "ok", "vector")),
                                strict=True):  # fmt: skip
                keys.append(k)
                vectors[k] = (bool(ok), None if v is None else repr(v).encode())
        out[f"{folder.parent.name}/{folder.name}"] = {
            "file_bytes": sorted(f.read_bytes() for f in files),
            "keys": keys,
            "vectors": vectors,
        }
    return out


def _outputs(data: Path) -> dict[str, bytes]:
    files = {name: (data / name).read_bytes() for name in OUTPUTS}
    for p in sorted((data / "cxr_embeddings").glob("*.parquet")):
        files[f"cxr_embeddings/{p.name}"] = p.read_bytes()
    return files


# --------------------------------------------------------------------------- tests


def _kill_on_second_step(victim: Worker, instance: DagsterInstance, driver: Any) -> str:
    """SIGKILL `victim` once it has finished one step and started another; that run's id."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and driver.poll() is None:
        started = [
            r.run_id
            for r in instance.get_runs()
            if victim.celery_pid() in _step_pids(instance, r.run_id)
        ]
        # mid-step: started by the victim, no step outcome yet (a run whose step has just
        # succeeded would finish anyway, and the kill would test nothing)
        mid_step = [
            r
            for r in started
            if not instance.get_run_by_id(r).is_finished  # type: ignore[union-attr]
            and not _step_outcomes(instance, r)
        ]
        if len(started) >= 2 and mid_step:
            victim.kill()
            return mid_step[0]
        time.sleep(0.5)
    raise AssertionError("the second worker never started a second step")


def test_backfills_through_two_workers_survive_a_killed_worker_and_match_in_process(
    cohort_data: Path, in_process: Path, broker: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(cohort_data, data)
    env = {**broker, "MOE_EXECUTOR": "celery"}
    with workers(tmp_path, data, broker) as ws:
        pids = {w.name: w.celery_pid() for w in ws}
        driver = _drive(tmp_path, data, BACKFILL, env=env, wait=False)
        instance = _instance(tmp_path)
        stuck = _kill_on_second_step(ws[1], instance, driver)
        # The other runs go on in the surviving worker. The killed step's task is not
        # acknowledged, so its run waits (until Celery's visibility timeout): terminate it.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if len(runs) == len(BACKFILL) and sum(r.is_finished for r in runs) == len(runs) - 1:
                break
            time.sleep(0.5)
        assert not instance.get_run_by_id(stuck).is_finished  # type: ignore[union-attr]
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=120)
        first = json.loads(driver.out.read_text())
        failed = [r for r, v in first.items() if v["exit"] != 0]
        assert [first[r]["run_id"] for r in failed] == [stuck], first
        # re-run what did not succeed, then the unpartitioned assets, through Celery too
        again = _drive(tmp_path, data, failed, env=env)
        assert {r: v["exit"] for r, v in again.items()} == dict.fromkeys(failed, 0)
        embed = _drive(tmp_path, data, ["embed"], env=env)
        assert embed["embed"]["exit"] == 0

    # every partition ran in one of the two workers, and both completed partitions
    done = {**{r: v for r, v in first.items() if v["exit"] == 0}, **again}
    assert sorted(done) == sorted(BACKFILL)
    per_run = {r: _step_pids(instance, v["run_id"]) for r, v in done.items()}
    assert all(len(p) == 1 and p <= set(pids.values()) for p in per_run.values()), per_run
    assert set().union(*per_run.values()) == set(pids.values()), (per_run, pids)
    assert _step_pids(instance, stuck) == {pids["w2"]}
    assert _step_pids(instance, embed["embed"]["run_id"]) <= set(pids.values())

    # the cache and the unpartitioned outputs: byte for byte those of the in-process run;
    # every vector once (the killed step left no partial or duplicate entry)
    ours, ref = _cache(data), _cache(in_process)
    assert ours.keys() == ref.keys() and len(ours) == 2  # notes and cxr
    for folder in ref:
        keys = ours[folder]["keys"]
        assert keys and len(keys) == len(set(keys)), f"duplicated vectors in {folder}"
        assert ours[folder]["vectors"] == ref[folder]["vectors"], f"missing vectors in {folder}"
        assert ours[folder]["file_bytes"] == ref[folder]["file_bytes"], folder
    assert _outputs(data) == _outputs(in_process)
