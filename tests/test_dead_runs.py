"""A run killed with SIGKILL must not keep its pool slot: the next run would wait forever.
(End to end: tests/test_faults.py::test_sigkill_during_staging_then_rerun_completes_identically.)"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from pipelines.dead_runs import release_slots_of_dead_runs


@pytest.fixture
def instance(tmp_path: Path):
    with DagsterInstance.local_temp(str(tmp_path)) as inst:
        inst.event_log_storage.set_concurrency_slots("duckdb", 1)
        inst.event_log_storage.set_concurrency_slots("torch", 1)
        yield inst


def _run_holding(instance: DagsterInstance, pool: str, pid: int) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=DagsterRunStatus.STARTED))
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name="__ASSET_JOB", pid=pid),
        run_id=run_id,
    )
    claim = instance.event_log_storage.claim_concurrency_slot(pool, run_id, "staged_patients")
    assert claim.is_claimed
    return run_id


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_slot_of_a_run_whose_process_died_is_freed_and_the_run_failed(instance) -> None:
    dead = _run_holding(instance, "duckdb", _dead_pid())
    alive = _run_holding(instance, "torch", os.getpid())

    assert release_slots_of_dead_runs(instance) == [dead]

    storage = instance.event_log_storage
    assert storage.get_concurrency_info("duckdb").claimed_slots == []
    assert [s.run_id for s in storage.get_concurrency_info("torch").claimed_slots] == [alive]
    assert instance.get_run_by_id(dead).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive).status == DagsterRunStatus.STARTED
    # the next claim of the freed pool succeeds at once
    assert storage.claim_concurrency_slot("duckdb", "next-run", "staged_admissions").is_claimed


def test_nothing_is_freed_while_every_holder_is_alive(instance) -> None:
    _run_holding(instance, "duckdb", os.getpid())
    assert release_slots_of_dead_runs(instance) == []
    assert len(instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots) == 1
