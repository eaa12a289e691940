"""Give back the pool slots of runs whose process died (SIGKILL, OOM killer, power loss).

The "duckdb" and "torch" pools (dagster.yaml: one step at a time) are claimed in the
instance's storage. A run killed with SIGKILL never gives its slot back, and without the
daemon's run monitoring (every `dagster asset materialize` / `dagster job execute` run)
the next run then waits for that slot forever ("Step still blocked by limit for pool").
When the code location loads, `release_slots_of_dead_runs` marks such runs failed and
frees their slots. A run counts as dead when storage still shows it in progress but the
process that started it (the pid of its RUN_START event) no longer exists.

Only on a local SQLite instance, where every run ran on this machine, so a pid means
something. A cluster instance (Postgres, see deploy/) leaves this to the daemon's run
monitoring.
"""

from __future__ import annotations

import logging
import os

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from plumbing.atomic import process_exists
from plumbing.pools import POOLS

IN_PROGRESS = (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING)
log = logging.getLogger(__name__)


def run_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started the run (its RUN_START event), if recorded."""
    result = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1)
    for record in result.records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return int(event.pid)
    return None


def is_local_instance(instance: DagsterInstance) -> bool:
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def release_slots_of_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed, and free the slots of, every run holding a pool slot whose process is
    gone; also free slots left by runs that already ended. Returns the run ids freed."""
    if not is_local_instance(instance):
        return []
    storage = instance.event_log_storage
    holders: set[str] = set()
    for pool in POOLS:
        info = storage.get_concurrency_info(pool)
        holders |= {s.run_id for s in info.claimed_slots}
        holders |= {p.run_id for p in info.pending_steps}
    freed = []
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in IN_PROGRESS:
            pid = run_pid(instance, run_id)
            if pid is None or process_exists(pid):
                continue  # alive, or not started far enough to tell: leave it
            instance.report_run_failed(
                run,
                f"The process of this run (pid {pid}) no longer exists (killed or crashed); "
                "marked failed so that its pool slots are free for the next run.",
            )
        elif run is not None and not run.is_finished:
            continue  # queued / not started: holds nothing yet
        storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
    return freed


def release_at_load() -> None:
    """Called when the code location loads; never stops it from loading."""
    if not os.environ.get("DAGSTER_HOME"):
        return  # an ephemeral instance: no pools, nothing held
    try:
        freed = release_slots_of_dead_runs(DagsterInstance.get())
    except Exception as err:  # a storage problem here must not hide the definitions
        log.warning("could not check for pool slots held by dead runs: %s", err)
        return
    if freed:
        log.warning(
            "freed the pool slots of %d run(s) whose process had died: %s",
            len(freed),
            ", ".join(freed),
        )
