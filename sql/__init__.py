"""Every SQL statement of the pipeline as a `.sql` file, the variable table as data
(`variables.csv`), and a small Dagster-free runner (`sql.runner`) and builders
(`sql.build`) that execute them with DuckDB."""

from plumbing.raw_layout import RAW_TABLES, RawInputError, RawTable
from sql.build import (
    ASSET_SQL,
    STAGED_NAMES,
    STAGING_SQL,
    BuildResult,
    CohortParams,
    StagingParams,
    build_cohort,
    build_cohort_cxr,
    build_cohort_notes,
    build_ehr_features,
    build_staged,
    code_version,
    run_check,
)
from sql.runner import load_sql, variable_names

__all__ = [
    "ASSET_SQL",
    "RAW_TABLES",
    "STAGED_NAMES",
    "STAGING_SQL",
    "BuildResult",
    "StagingParams",
    "CohortParams",
    "RawInputError",
    "RawTable",
    "build_cohort",
    "build_cohort_cxr",
    "build_cohort_notes",
    "build_ehr_features",
    "build_staged",
    "code_version",
    "load_sql",
    "run_check",
    "variable_names",
]
