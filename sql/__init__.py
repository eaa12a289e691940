"""Every SQL statement of the pipeline as a `.sql` file, one per table (as in MIT-LCP's
mimic-code concepts), run with DuckDB by a small Dagster-free loop:

    staging/<table>.sql   raw CSV (the view `raw`, all VARCHAR) -> staged_<table>, with
                          `_reject` / `_unparsed` per row; keys.sql wraps the keyed tables
    cohort/               candidates, stays, flow, notes, X-rays, the cohort table
    features/             ehr_events (the window), ehr_features
    checks/<rule>.sql     the leak guards behind the asset checks (violations, must be 0)
    tasks/<task>.sql      one label query per task (plumbing/tasks.py)
    export/               the MEDS export

`sql.build` holds the loop (`build_staged`; `_build` for the cohort group), `sql.runner`
the DuckDB helpers, `sql.errors` what the user reads when input or folder is the problem."""

from plumbing.raw_layout import RAW_TABLES, RawInputError, RawTable
from sql.build import (
    ASSET_SQL,
    COHORT_ABOUT,
    STAGED_NAMES,
    STAGING_ABOUT,
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
    "COHORT_ABOUT",
    "RAW_TABLES",
    "STAGED_NAMES",
    "STAGING_ABOUT",
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
