"""How the pipeline refreshes itself: a weekly schedule and a raw-files change sensor.

Both launch `cohort_refresh`; the downstream assets (embeddings, dataset, models, report)
carry an eager `AutomationCondition`, so a refresh ends with updated models and report,
and the embedding caches make the recomputation cost only what changed.
"""

from __future__ import annotations

import os

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from pipelines.jobs import cohort_refresh_job
from plumbing.raw_layout import fingerprint
from plumbing.settings import project_paths

REFRESH_CRON = os.environ.get("MOE_REFRESH_CRON", "0 3 * * 0")  # Sundays 03:00

cohort_refresh_schedule = ScheduleDefinition(
    name="cohort_refresh_schedule",
    job=cohort_refresh_job,
    cron_schedule=REFRESH_CRON,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly cohort refresh (cron from MOE_REFRESH_CRON). Start it in the UI.",
)


@sensor(
    name="mimic_root_change_sensor",
    job=cohort_refresh_job,
    minimum_interval_seconds=600,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Watches MOE_MIMIC_ROOT (file names, sizes, modification times; never contents) and "
        "requests a cohort refresh when they change, once per distinct state."
    ),
)
def mimic_root_change_sensor(context: SensorEvaluationContext):
    paths = project_paths()
    if paths.is_demo:
        return SkipReason("MOE_MIMIC_ROOT is not set: nothing to watch (demo profile).")
    if not paths.raw_root.is_dir():
        return SkipReason(f"MOE_MIMIC_ROOT={paths.raw_root} does not exist.")
    current = fingerprint(paths.raw_root)
    if context.cursor == current:
        return SkipReason("Raw files unchanged since the last refresh request.")
    context.update_cursor(current)
    # The run key makes a second evaluation of the same state a no-op, even if the cursor
    # were lost: Dagster never launches two runs with one key for one sensor.
    return RunRequest(run_key=f"raw-{current}", tags={"moe/raw_fingerprint": current})
