"""Cohort assets: stays + labels + split + availability, EHR features, eligible notes and
X-rays (SQL in `sql/`), with the asset checks that guard the science."""

from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from plumbing.dagster_config import config_from, config_of, launch_checked
from plumbing.pools import DUCKDB_POOL
from plumbing.resources import DuckDBSettings, ProjectResource
from plumbing.reuse import parquet_stats
from plumbing.tasks import TASKS, Task, built_task_names
from sql import (
    COHORT_ABOUT,
    STAGED_NAMES,
    BuildResult,
    CohortParams,
    build_cohort,
    build_cohort_cxr,
    build_cohort_notes,
    build_ehr_features,
    code_version,
    run_check,
)

# Plausible ranges (warning checks): outside them the data or the SQL is probably off.
# Label prevalence ranges come from the task registry (Task.plausible).
AVAILABILITY_MIN = {"has_ehr": 0.5, "has_notes": 0.05, "has_cxr": 0.02}


CohortConfig = config_from(
    "CohortConfig",
    "Cohort definition parameters (cohort spec defaults: sql.build.CohortParams).",
    [CohortParams],
    COHORT_ABOUT,  # beside the dataclass, which checks its own values with it
)


def _common(result: BuildResult) -> dict[str, Any]:
    return {
        "dagster/row_count": int(result.stats.get("rows", result.stats.get("stays", 0))),
        "reused_unchanged_inputs": result.reused,
        "fingerprint": result.fingerprint,
        "path": MetadataValue.path(str(result.path)),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def year_group_table(stats: dict[str, Any]) -> str:
    """X-ray availability by anchor_year_group: MIMIC-CXR has studies of 2011-2016 only, so
    stays whose (approximate) real year is outside cannot have one."""
    rows = stats.get("by_anchor_year_group", {})
    return (
        "| anchor_year_group | stays | has_cxr | stays outside MIMIC-CXR's 2011-2016 |\n"
        "|---|---|---|---|\n"
        + "".join(
            f"| {g} | {v['stays']} | {_fmt(v['has_cxr'])} | {v['outside_cxr_years']} |\n"
            for g, v in rows.items()
        )
    )


def cohort_metadata(result: BuildResult) -> dict[str, Any]:
    """Counts and rates only (no text, no identifiers)."""
    s = result.stats
    tasks = built_task_names(s)
    per_split = s["per_split"].values()
    nullable = [t for t in tasks if any(v.get(f"{t}_null") for v in per_split)]
    flow = "| step | rule | stays remaining |\n|---|---|---|\n" + "".join(
        f"| {f['step']} | {f['rule']} | {f['stays']} |\n" for f in s["flow"]
    )
    head = ["split", "stays", *tasks, *(f"{t} null" for t in nullable), *AVAILABILITY_MIN]
    prevalence = (
        f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n"
        + "".join(
            f"| {split} | {v['stays']} | "
            + "".join(f"{_fmt(v[t])} | " for t in tasks)
            + "".join(f"{v[f'{t}_null']} | " for t in nullable)
            + "".join(f"{_fmt(v[f])} | " for f in AVAILABILITY_MIN)
            + "\n"
            for split, v in s["per_split"].items()
        )
    )
    patterns = "| modalities at t0 | stays |\n|---|---|\n" + "".join(
        f"| {p} | {n} |\n" for p, n in s["patterns"].items()
    )
    return {
        **_common(result),
        "dagster/row_count": int(s["stays"]),
        "subjects": int(s["subjects"]),
        "cohort_flow": MetadataValue.md(flow),
        "label_prevalence_by_split": MetadataValue.md(prevalence),
        "availability_patterns": MetadataValue.md(patterns),
        "cxr_availability_by_anchor_year_group": MetadataValue.md(year_group_table(s)),
        "modules_absent": ", ".join(s["modules_absent"]) or "none",
        "jpg_files_found": int(s["jpg_files_found"]),
    }


def cohort_asset(tasks: Sequence[Task] = TASKS) -> AssetsDefinition:
    """The `cohort` asset with one label column per task of `tasks` (the registry's)."""
    names = ", ".join(t.name for t in tasks)

    @asset(
        name="cohort",
        deps=[f"staged_{n}" for n in STAGED_NAMES],
        group_name="cohort",
        kinds={"duckdb", "parquet"},
        pool=DUCKDB_POOL,
        code_version=code_version("cohort", tasks),
        config_schema=launch_checked(CohortConfig),
        description=(
            f"One row per ICU stay of the cohort (docs/cohort-spec.md): labels {names} "
            "(nullable Int8, one per registered task, sql/tasks/<task>.sql), subject-level "
            "split, has_ehr / has_notes / has_cxr and cxr_dicom_id at t0 = intime + W. "
            "SQL: sql/cohort/cohort_candidates, cohort_stays, cohort."
        ),
    )
    def _cohort(
        context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
    ) -> MaterializeResult:
        paths = project.paths()
        params = config_of(context, CohortConfig).to(CohortParams)
        settings = duckdb.settings(paths.data_dir)
        result = build_cohort(paths.raw_root, paths.data_dir, settings, params, tasks=tasks)
        for module in result.stats.get("modules_absent", []):
            context.log.warning(
                f"staged_{module} is empty (raw file absent): that modality is missing."
            )
        return MaterializeResult(
            metadata=cohort_metadata(result), data_version=DataVersion(result.fingerprint)
        )

    return _cohort


cohort = cohort_asset()


@asset(
    deps=["cohort", "staged_chartevents", "staged_labevents"],
    group_name="cohort",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    code_version=code_version("ehr_features"),
    description=(
        "Per stay and variable of sql/variables.csv: mean/min/max/last/count of the plausible "
        "values in [intime - L, t0) (L: ehr_lookback_hours of the cohort, default 6 h; °F converted), plus age and gender. "
        "SQL: sql/features/ehr_events, ehr_features."
    ),
)
def ehr_features(
    context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> MaterializeResult:
    paths = project.paths()
    result = build_ehr_features(paths.data_dir, duckdb.settings(paths.data_dir))
    s = result.stats
    dropped = s.get("dropped_implausible_by_variable", {})
    return MaterializeResult(
        metadata={
            **_common(result),
            "values_kept": int(s["values_kept"]),
            "values_dropped_implausible": int(s["values_dropped_implausible"]),
            "dropped_implausible_by_variable": MetadataValue.md(
                "| variable | dropped |\n|---|---|\n"
                + "".join(f"| {v} | {n} |\n" for v, n in dropped.items())
                if dropped
                else "none"
            ),
        },
        data_version=DataVersion(result.fingerprint),
    )


@asset(
    deps=["cohort", "staged_discharge", "staged_radiology"],
    group_name="cohort",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    code_version=code_version("cohort_notes"),
    description=(
        "Notes each stay may use at t0 (stay_id, note_id, note_type, charttime): radiology "
        "written and stored in [admittime, t0), discharge notes of earlier admissions only. "
        "Text stays in staged_discharge / staged_radiology. SQL: sql/cohort/cohort_notes."
    ),
)
def cohort_notes(
    context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> MaterializeResult:
    paths = project.paths()
    result = build_cohort_notes(paths.data_dir, duckdb.settings(paths.data_dir))
    s = result.stats
    return MaterializeResult(
        metadata={
            **_common(result),
            "stays_with_notes": int(s["stays_with_notes"]),
            "notes_by_type": MetadataValue.json(s["notes_by_type"]),
        },
        data_version=DataVersion(result.fingerprint),
    )


@asset(
    deps=["cohort", "staged_cxr_metadata"],
    group_name="cohort",
    kinds={"duckdb", "parquet"},
    pool=DUCKDB_POOL,
    code_version=code_version("cohort_cxr"),
    description=(
        "The chosen X-ray per stay (stay_id, dicom_id, study_id, study_time, path relative to "
        "<root>/cxr/): latest frontal (AP/PA) image in [admittime, t0) whose JPG exists. "
        "SQL: sql/cohort/cohort_cxr."
    ),
)
def cohort_cxr(
    context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> MaterializeResult:
    paths = project.paths()
    result = build_cohort_cxr(paths.raw_root, paths.data_dir, duckdb.settings(paths.data_dir))
    return MaterializeResult(
        metadata={**_common(result), "jpg_files_found": int(result.stats["jpg_files_found"])},
        data_version=DataVersion(result.fingerprint),
    )


# --------------------------------------------------------------------------- checks


def _violations(
    check: str, project: ProjectResource, duckdb: DuckDBSettings, tables: list[str]
) -> AssetCheckResult:
    paths = project.paths()
    n = run_check(check, paths.data_dir, duckdb.settings(paths.data_dir), tables)
    return AssetCheckResult(passed=n == 0, metadata={"violations": n})


@asset_check(asset=cohort, blocking=True, description="No subject appears in two splits.")
def cohort_no_subject_in_two_splits(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    return _violations("split_by_subject", project, duckdb, ["cohort"])


@asset_check(asset=cohort, blocking=True, description="No duplicate stay_id.")
def cohort_unique_stay_id(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    return _violations("unique_stay", project, duckdb, ["cohort"])


def rates_check(tasks: Sequence[Task] = TASKS) -> AssetChecksDefinition:
    """Warning check: each task's prevalence inside its `Task.plausible` range, and the
    modality availability rates above AVAILABILITY_MIN."""

    @asset_check(
        asset="cohort",
        name="cohort_rates_plausible",
        blocking=False,
        description="Label prevalences (per registered task) and modality availability rates "
        "inside plausible ranges.",
    )
    def _rates(context: AssetCheckExecutionContext, project: ProjectResource) -> AssetCheckResult:
        stats = parquet_stats(project.paths().table("cohort"))
        absent = set(stats.get("modules_absent", []))
        problems = []
        for task in tasks:
            low, high = task.plausible
            rate = stats["prevalence"].get(task.name)
            if rate is None or not low <= rate <= high:
                problems.append(f"{task.name} prevalence {_fmt(rate)} outside [{low}, {high}]")
        skip = {
            "has_notes": {"discharge", "radiology"} <= absent,
            "has_cxr": "cxr_metadata" in absent,
        }
        for flag, low in AVAILABILITY_MIN.items():
            rate = stats["availability"].get(flag)
            if not skip.get(flag) and (rate is None or rate < low):
                problems.append(f"{flag} rate {_fmt(rate)} below {low}")
        return AssetCheckResult(
            passed=not problems,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "problems": "; ".join(problems) or "none",
                **{f"prevalence_{k}": v for k, v in stats["prevalence"].items() if v is not None},
                **{f"rate_{k}": v for k, v in stats["availability"].items() if v is not None},
            },
        )

    return _rates


cohort_rates_plausible = rates_check()


@asset_check(
    asset=ehr_features,
    blocking=True,
    description="No EHR value with a time at or after t0 (or before intime - L) enters a feature.",
)
def ehr_features_no_value_at_or_after_t0(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    tables = ["cohort", "staged_chartevents", "staged_labevents", "ehr_events", "ehr_features"]
    return _violations("ehr_before_t0", project, duckdb, tables)


@asset_check(
    asset=cohort_notes,
    blocking=True,
    description="No note written or stored at or after t0 is eligible.",
)
def cohort_notes_no_note_at_or_after_t0(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    tables = ["cohort", "cohort_notes", "staged_radiology", "staged_discharge"]
    return _violations("notes_before_t0", project, duckdb, tables)


@asset_check(
    asset=cohort_notes,
    blocking=True,
    description="The current admission's discharge summary and addenda are never eligible.",
)
def cohort_notes_no_current_discharge_summary(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    tables = ["cohort", "cohort_notes", "staged_discharge"]
    return _violations("no_current_discharge", project, duckdb, tables)


@asset_check(
    asset=cohort_cxr,
    blocking=True,
    description="Chosen images are frontal, in [admittime, t0), and match cohort.cxr_dicom_id.",
)
def cohort_cxr_no_image_at_or_after_t0(
    context: AssetCheckExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
) -> AssetCheckResult:
    return _violations(
        "cxr_before_t0", project, duckdb, ["cohort", "cohort_cxr", "staged_cxr_metadata"]
    )
