"""Faults: SIGKILL mid-run then resume, two runs at once, a full disk, an unwritable data
directory; and determinism (same data and seeds, identical outputs).

The slow tests run the real CLI (`dagster asset materialize --select '*moe_mortality'`) on
60 synthetic stays, each in its own DAGSTER_HOME / MOE_DATA_DIR. Atomic writes and the
cache's own tests are in tests/test_embed_cache.py; the unchanged re-run in
tests/test_embed_assets.py and tests/test_cohort_pipeline.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import materialize

from assets.staging import staged_patients
from plumbing.resources import DuckDBSettings, ProjectResource
from tests.cohort_fixtures import RawBuilder
from tests.reliability_helpers import (
    REPO,
    TASK,
    any_file,
    assert_same_outputs,
    cache_report,
    kill_when,
    make_home,
    outputs_of,
    run_cli,
    start_cli,
    temp_leftovers,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run: its outputs and cache."""
    root = tmp_path_factory.mktemp("reference")
    data = root / "data"
    rc, log = run_cli(data, make_home(root))
    assert rc == 0, log[-3000:]
    return {"data": data, "outputs": outputs_of(data), "cache": cache_report(data)}


def _resume_and_compare(root: Path, reference: dict[str, Any]) -> Path:
    data = root / "data"
    rc, log = run_cli(data, root / "dagster_home")
    assert rc == 0, log[-3000:]
    assert_same_outputs(outputs_of(data), reference["outputs"])
    assert temp_leftovers(data) == []
    cache = cache_report(data)
    for folder, info in cache["folders"].items():
        assert info["keys"] == info["unique_keys"], f"duplicate cache entries in {folder}"
        assert info["key_set"] == reference["cache"]["folders"][folder]["key_set"]
    return data


@pytest.mark.slow
def test_same_data_and_seeds_give_identical_outputs(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    data = tmp_path / "data"
    rc, log = run_cli(data, make_home(tmp_path))
    assert rc == 0, log[-3000:]
    assert_same_outputs(outputs_of(data), reference["outputs"])


@pytest.mark.slow
def test_sigkill_during_staging_then_rerun_completes_identically(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    data = tmp_path / "data"
    proc = start_cli(data, make_home(tmp_path))
    assert kill_when(proc, any_file(data, "staged_*.parquet")), "run ended before the kill"
    assert not (data / "cohort.parquet").exists()
    _resume_and_compare(tmp_path, reference)


@pytest.mark.slow
def test_sigkill_during_embedding_redoes_only_work_in_flight(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    data = tmp_path / "data"
    proc = start_cli(data, make_home(tmp_path))
    assert kill_when(proc, any_file(data / "cache" / "notes", "*/b0*.parquet")), "run ended early"
    assert not (data / "note_embeddings.parquet").exists()
    partial = cache_report(data)
    notes = next(v for k, v in partial["folders"].items() if k.startswith("notes/"))
    assert 0 < notes["keys"] == notes["unique_keys"]
    _resume_and_compare(tmp_path, reference)


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_completes_identically(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    data = tmp_path / "data"
    proc = start_cli(data, make_home(tmp_path))
    assert kill_when(proc, any_file(data, "multimodal_dataset.parquet"), delay=2.0)
    model = data / "models" / TASK
    if (model / "metrics.json").exists():  # whatever was written is whole
        outputs_of(data)
    _resume_and_compare(tmp_path, reference)


@pytest.mark.slow
def test_two_runs_at_once_over_one_data_dir(tmp_path: Path, reference: dict[str, Any]) -> None:
    """A scheduled refresh and a UI materialization at once (one DAGSTER_HOME, one data dir)."""
    data = tmp_path / "data"
    home = make_home(tmp_path)
    rc, log = run_cli(data, home, select="mimic_raw")  # raw files exist, nothing else yet
    assert rc == 0, log[-2000:]
    logs = [home / "a.log", home / "b.log"]
    procs = [start_cli(data, home, log=log) for log in logs]
    rcs = [p.wait(timeout=900) for p in procs]
    assert rcs == [0, 0], [log.read_text(errors="replace")[-2000:] for log in logs]
    assert_same_outputs(outputs_of(data), reference["outputs"])
    assert temp_leftovers(data) == []
    for folder, info in cache_report(data)["folders"].items():  # duplicates allowed, no loss
        assert info["key_set"] == reference["cache"]["folders"][folder]["key_set"], folder


# ------------------------------------------------------------------ disk and permissions

_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from sql import build_staged
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
raw, data, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
settings = {"memory_limit": "256MB", "threads": 1, "temp_directory": str(data / ".duckdb_tmp")}
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes beyond: EFBIG, like ENOSPC
build_staged("chartevents", raw, data, settings, force=True)
"""


def _world(tmp_path: Path, n: int = 40) -> Path:
    b = RawBuilder()
    for i in range(n):
        subject = 10000001 + i
        _, stay = b.subject(subject)
        from tests.cohort_fixtures import INTIME, H

        for k in range(50):
            b.chart(subject, stay, 220045, INTIME + k * H / 4, 60 + k)
    return b.write(tmp_path / "raw")


def test_full_disk_is_a_clear_error_and_keeps_earlier_output(tmp_path: Path) -> None:
    raw, data = _world(tmp_path), tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _FULL_DISK, str(raw), str(data)]
    ok = subprocess.run([*cmd, str(1 << 30)], env=env, capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr[-2000:]
    out = data / "staged_chartevents.parquet"
    before = out.read_bytes()
    full = subprocess.run([*cmd, "2000"], env=env, capture_output=True, text=True, cwd=REPO)
    assert full.returncode != 0
    last = full.stderr.strip().splitlines()[-1]  # what the user reads last
    assert f"Cannot write {data}" in last and "disk is full" in last, last
    assert "No output was replaced" in last and "download it again" not in last
    assert out.read_bytes() == before
    assert temp_leftovers(data) == []


def test_unwritable_data_dir_is_a_clear_dagster_failure(tmp_path: Path) -> None:
    b = RawBuilder()
    b.subject(10000001)
    raw = b.write(tmp_path / "raw")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the data directory should be")
    data = blocker / "data"
    result = materialize(
        [staged_patients],
        resources={
            "project": ProjectResource(data_dir=str(data), mimic_root=str(raw)),
            "duckdb": DuckDBSettings(
                memory_limit="256MB", threads=1, temp_directory=str(tmp_path / "t")
            ),
        },
        selection=[staged_patients.key],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    err = failure.event_specific_data.error
    text = ""
    while err is not None:
        text += err.message
        err = err.cause
    assert str(blocker) in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_data_dir_keeps_earlier_output(tmp_path: Path) -> None:
    b = RawBuilder()
    b.subject(10000001)
    raw = b.write(tmp_path / "raw")
    data = tmp_path / "data"
    from sql import build_staged

    settings = {"memory_limit": "256MB", "threads": 1, "temp_directory": str(tmp_path / "t")}
    good = build_staged("patients", raw, data, settings)
    before = good.path.read_bytes()
    data.chmod(0o500)
    try:
        with pytest.raises(Exception) as err:
            build_staged("patients", raw, data, settings, force=True)
        assert str(data) in str(err.value)
        assert good.path.read_bytes() == before
    finally:
        data.chmod(0o700)
