"""Staging assets: one per raw MIMIC table, DuckDB CSV(.gz) -> Parquet (SQL in `sql/`)."""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from plumbing.dagster_config import config_from, config_of, launch_checked
from plumbing.pools import DUCKDB_POOL
from plumbing.resources import DuckDBSettings, ProjectResource
from sql import (
    RAW_TABLES,
    STAGED_NAMES,
    STAGING_ABOUT,
    STAGING_SQL,
    BuildResult,
    StagingParams,
    build_staged,
    code_version,
)

StagingConfig = config_from(
    "StagingConfig",
    "Staging settings (defaults: sql.build.StagingParams).",
    [StagingParams],
    STAGING_ABOUT,  # beside the dataclass, which checks its own values with it
)


_DESCRIPTIONS = {
    "patients": "Patients (MIMIC-IV hosp/patients): gender, anchor age and year.",
    "admissions": "Hospital admissions (hosp/admissions): times and in-hospital death.",
    "icustays": "ICU stays (icu/icustays); stays with outtime < intime are dropped and counted.",
    "chartevents": "Vital signs (icu/chartevents) filtered to the item ids of sql/variables.csv.",
    "labevents": "Laboratory values (hosp/labevents) filtered to the item ids of sql/variables.csv.",
    "discharge": "Discharge summaries and addenda with text (MIMIC-IV-Note note/discharge); empty when absent.",
    "radiology": "Radiology reports with text (MIMIC-IV-Note note/radiology); empty when absent.",
    "cxr_metadata": "MIMIC-CXR-JPG image metadata with parsed study time and JPG path; empty when absent.",
}


def staging_metadata(result: BuildResult) -> dict[str, Any]:
    """Counts only: rows kept, rows dropped per reason, reuse flag."""
    stats = result.stats
    dropped = stats.get("dropped_by_reason", {})
    table = "| reason | rows dropped |\n|---|---|\n" + "".join(
        f"| {reason} | {n} |\n" for reason, n in dropped.items()
    )
    return {
        "dagster/row_count": int(stats.get("rows", 0)),
        "rows_dropped": int(stats.get("rows_dropped", 0)),
        "values_unparsed": int(sum(stats.get("values_unparsed_by_column", {}).values())),
        "dropped_by_reason": MetadataValue.md(table if dropped else "none"),
        "source_present": stats.get("source", "absent") != "absent",
        "reused_unchanged_inputs": result.reused,
        "fingerprint": result.fingerprint,
        "path": MetadataValue.path(str(result.path)),
    }


def _staging_asset(name: str) -> AssetsDefinition:
    table = RAW_TABLES[name]

    @asset(
        name=f"staged_{name}",
        deps=["mimic_raw"],
        group_name="staging",
        kinds={"duckdb", "parquet"},
        pool=DUCKDB_POOL,
        code_version=code_version(f"staged_{name}"),
        config_schema=launch_checked(StagingConfig),
        description=(
            f"{_DESCRIPTIONS[name]} Reads {table.relative} (or .csv) with explicit types and "
            f"timestamp formats; writes $MOE_DATA_DIR/staged_{name}.parquet "
            f"(SQL: sql/{STAGING_SQL[name]}.sql)."
        ),
    )
    def _staged(
        context: AssetExecutionContext, project: ProjectResource, duckdb: DuckDBSettings
    ) -> MaterializeResult:
        paths = project.paths()
        params = config_of(context, StagingConfig).to(StagingParams)
        settings = duckdb.settings(paths.data_dir)
        result = build_staged(name, paths.raw_root, paths.data_dir, settings, params=params)
        for warning in result.warnings:
            context.log.warning(warning)
        if result.reused:
            context.log.info(f"staged_{name}: inputs unchanged, reused {result.path}.")
        return MaterializeResult(
            metadata=staging_metadata(result), data_version=DataVersion(result.fingerprint)
        )

    return _staged


staging_assets = [_staging_asset(name) for name in STAGED_NAMES]
staged_patients, staged_admissions, staged_icustays, staged_chartevents = staging_assets[:4]
staged_labevents, staged_discharge, staged_radiology, staged_cxr_metadata = staging_assets[4:]
