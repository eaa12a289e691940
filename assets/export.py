"""The cohort exported to the MEDS ecosystem (group `export`): `meds_events` and
`meds_labels` under `$MOE_DATA_DIR/meds/`, so that MEDS tools (meds-tab, ACES,
MEDS-transforms) run on exactly this pipeline's stays, t0 and labels.

SQL: sql/export/*.sql; builders: sql/export/meds.py. Counts only in metadata.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from plumbing.atomic import write_json_atomic
from plumbing.pools import DUCKDB_POOL
from plumbing.resources import DuckDBSettings, ProjectResource
from plumbing.tasks import TASK_NAMES
from sql.export.meds import (
    build_meds_events,
    build_meds_labels,
    count_events_not_before_t0,
    meds_code_version,
    meds_root,
)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def dataset_metadata(paths_is_demo: bool) -> dict[str, Any]:
    """metadata/dataset.json (MEDS DatasetMetadataSchema); no timestamp, so a re-run on the
    same data writes the same file."""
    return {
        "dataset_name": "MoE-Health demo cohort" if paths_is_demo else "MoE-Health MIMIC-IV cohort",
        "dataset_version": "synthetic" if paths_is_demo else "MIMIC-IV",
        "etl_name": "moe-health",
        "etl_version": _version("moe-health"),
        "meds_version": "0.4.1",
        "description_uri": "README.md#meds-export",
    }


@asset(
    deps=["cohort", "staged_patients", "staged_chartevents", "staged_labevents"],
    group_name="export",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    code_version=meds_code_version("events"),
    description=(
        "The cohort's EHR events in the MEDS data schema (meds/data/<split>/0.parquet: "
        "subject_id, time, code, numeric_value): the values the EHR features use, all before "
        "their stay's t0 (codes CHART//<itemid>, LAB//<itemid>//<unit>), GENDER//<F|M> as a "
        "static code, MEDS_BIRTH; plus meds/metadata/codes.parquet and dataset.json."
    ),
)
def meds_events(
    context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> MaterializeResult:
    paths = project.paths()
    stats = build_meds_events(paths.data_dir, duckdb.settings(paths.data_dir))
    root = meds_root(paths.data_dir)
    write_json_atomic(dataset_metadata(paths.is_demo), root / "metadata" / "dataset.json")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(root)),
            "dagster/row_count": int(stats["events"]),
            "subjects": int(stats["subjects"]),
            "static_events": int(stats["static_events"]),
            "distinct_codes": int(stats["distinct_codes"]),
            "events_by_split": MetadataValue.json(stats["events_by_split"]),
        }
    )


@asset(
    deps=["cohort"],
    group_name="export",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    code_version=meds_code_version("labels"),
    description=(
        "One MEDS label file per task of the registry (plumbing/tasks.py; "
        "meds/labels/<task>/labels.parquet: subject_id, "
        "prediction_time = t0, boolean_value; stays whose label is null are left out) and "
        "the split as MEDS subject splits (meds/metadata/subject_splits.parquet: train, "
        "tuning = val, held_out = test)."
    ),
)
def meds_labels(
    context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> MaterializeResult:
    paths = project.paths()
    stats = build_meds_labels(paths.data_dir, duckdb.settings(paths.data_dir), TASK_NAMES)
    table = "| task | labels | positive |\n|---|---|---|\n" + "".join(
        f"| {t} | {n} | {stats['positives'][t]} |\n" for t, n in stats["labels"].items()
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(meds_root(paths.data_dir) / "labels")),
            "subjects": int(stats["subjects"]),
            "labels_by_task": MetadataValue.md(table),
        }
    )


@asset_check(
    asset=meds_events,
    blocking=True,
    description="Every timed event of the export (MEDS_BIRTH aside) lies in a cohort stay's "
    "window [intime - L, t0) of its subject: none at or after t0.",
)
def meds_events_no_event_at_or_after_t0(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    paths = project.paths()
    n = count_events_not_before_t0(paths.data_dir, duckdb.settings(paths.data_dir))
    return AssetCheckResult(passed=n == 0, metadata={"violations": n})
