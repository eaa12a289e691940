"""Build the staged tables and the cohort tables from raw files: plain functions, no Dagster.

Every builder validates its inputs before writing, writes its Parquet atomically, and
reuses the existing file when the fingerprint of its inputs (SQL hash, parameters, raw
file identities or upstream fingerprints) is unchanged, so a re-run on unchanged inputs
recomputes nothing expensive.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from plumbing.bounds import About, check_bounds
from plumbing.raw_layout import RAW_TABLES, RawTable
from plumbing.reuse import combine, file_identity, parquet_key, parquet_stats, reusable_parquet
from plumbing.settings import materialize_first
from plumbing.tasks import TASKS, Task, check_unique
from sql.errors import guarded, writable
from sql.fast_read import stage_source
from sql.runner import (
    VARIABLES_CSV,
    check_rejections,
    code_hash,
    connect,
    feature_columns_sql,
    list_cxr_files,
    load_sql,
    parquet_view,
    set_interval,
    sql_view,
    stage_table,
    staging_warnings,
    validate_raw,
    write_parquet_atomic,
)

STAGED_NAMES = list(RAW_TABLES)  # patients, admissions, icustays, chartevents, ...
# the staging statement of each table: sql/staging/<name>.sql; the two note tables share one
STAGING_SQL = {n: f"staging/{'notes' if t.module == 'note' else n}" for n, t in RAW_TABLES.items()}
# The cohort columns `ehr_features` reads (sql/features/): its key covers these alone.
EHR_COHORT_COLUMNS = ("stay_id", "subject_id", "intime", "prediction_time", "age", "gender")
COHORT_VIEWS = [  # built in this order by the cohort build, each from its sql/ file
    "cohort/cohort_candidates",
    "cohort/cohort_stays",
    "features/ehr_events",
    "cohort/cohort_notes",
    "cohort/cohort_cxr",
]

# The SQL files each table asset runs (its code_version is their hash).
ASSET_SQL: dict[str, list[str]] = {
    **{
        f"staged_{n}": ["macros", STAGING_SQL[n], *(["staging/keys"] if t.key else [])]
        for n, t in RAW_TABLES.items()
    },
    "cohort": [
        "macros", *COHORT_VIEWS, "cohort/cohort_flow", "cohort/cohort", "cohort/cohort_year_groups"
    ],
    "ehr_features": ["macros", "features/ehr_events", "features/ehr_features"],
    "cohort_notes": ["macros", "cohort/cohort_notes"],
    "cohort_cxr": ["macros", "cohort/cohort_cxr"],
}
_ASSET_DATA: dict[str, list[Path]] = {
    "staged_chartevents": [VARIABLES_CSV],
    "staged_labevents": [VARIABLES_CSV],
    "cohort": [VARIABLES_CSV],
    "ehr_features": [VARIABLES_CSV],
}


def code_version(asset: str, tasks: Sequence[Task] = TASKS) -> str:
    """Hash of the SQL (and variable table) that `asset` runs; the cohort's includes the
    label query of each task."""
    base = code_hash(ASSET_SQL[asset], _ASSET_DATA.get(asset, []))
    return combine(base, [t.digest() for t in tasks]) if asset == "cohort" else base


# Each cohort setting's description and bounds: the launchpad's (assets/cohort.py
# CohortConfig is generated from CohortParams with this table) and the dataclass's own check.
COHORT_ABOUT: dict[str, About] = {
    "observation_window_hours": About(
        "W: prediction time t0 = intime + W; stays shorter than W are out.", gt=0
    ),
    "long_stay_days": About("long_los = 1 when the ICU stay is strictly longer than this.", gt=0),
    "readmission_days": About(
        "readmission = 1 when another admission starts within this after discharge.", gt=0
    ),
    "ehr_lookback_hours": About(
        "L: EHR values enter the features from intime - L (until t0).", ge=0, le=168
    ),
}


@dataclass(frozen=True)
class CohortParams:
    """The cohort settings; the SQL reads each as a DuckDB variable (`COHORT_VARIABLES`).
    A value outside `COHORT_ABOUT`'s bounds is a ValueError naming the field."""

    observation_window_hours: float = 48.0  # W: t0 = intime + W
    long_stay_days: float = 7.0
    readmission_days: float = 30.0
    ehr_lookback_hours: float = 6.0  # EHR values enter the features from intime - this

    def __post_init__(self) -> None:
        check_bounds(self, COHORT_ABOUT)


# DuckDB variable -> (CohortParams field, seconds per unit)
COHORT_VARIABLES = {
    "observation_window": ("observation_window_hours", 3600),
    "long_stay": ("long_stay_days", 86400),
    "readmission_window": ("readmission_days", 86400),
    "ehr_lookback": ("ehr_lookback_hours", 3600),
}


def set_cohort_variables(con: duckdb.DuckDBPyConnection, params: CohortParams) -> None:
    for variable, (name, seconds) in COHORT_VARIABLES.items():
        set_interval(con, variable, getattr(params, name) * seconds)


def cohort_views(con: duckdb.DuckDBPyConnection, data_dir: Path) -> CohortParams:
    """The built cohort as `cohort`, and as `cohort_stays` for the statements shared with
    the cohort build (there `cohort_stays` is sql/cohort/cohort_stays.sql; the built
    cohort holds the same stays). The cohort variables are set to the values it was built
    with, so downstream tables use the cohort's own W and lookback."""
    path = data_dir / "cohort.parquet"
    parquet_view(con, "cohort", path)
    con.execute("CREATE OR REPLACE TEMP VIEW cohort_stays AS SELECT * FROM cohort")
    recorded = parquet_stats(path).get("params", {})
    params = CohortParams(**{k: v for k, v in recorded.items() if k in CohortParams.__dataclass_fields__})
    set_cohort_variables(con, params)
    return params


# Each staging setting's description and bounds: the launchpad's (assets/staging.py
# StagingConfig is generated from StagingParams with this table) and the dataclass's own check.
STAGING_ABOUT: dict[str, About] = {
    "max_rejected_fraction": About(
        "More than this share of the table's rows dropped (malformed, duplicate keys) "
        "fails the step before any output is replaced; fewer are dropped with a warning.",
        ge=0.0,
        le=1.0,
    )
}


@dataclass(frozen=True)
class StagingParams:
    """The staging settings. A value outside `STAGING_ABOUT`'s bounds is a ValueError
    naming the field."""

    # more than this share of a table's rows dropped (malformed, duplicate, implausible)
    # fails the staging before any output is replaced; fewer are dropped with a warning
    max_rejected_fraction: float = 0.01

    def __post_init__(self) -> None:
        check_bounds(self, STAGING_ABOUT)


@dataclass
class BuildResult:
    path: Path
    fingerprint: str
    stats: dict[str, Any]
    reused: bool
    warnings: list[str] = field(default_factory=list)


def _reuse(out: Path, fingerprint: str, force: bool) -> BuildResult | None:
    stats = None if force else reusable_parquet(out, fingerprint)
    return None if stats is None else BuildResult(out, fingerprint, stats, reused=True)


def _staged(data_dir: Path, name: str) -> Path:
    return data_dir / f"staged_{name}.parquet"


def columns_fingerprint(path: Path, columns: Sequence[str]) -> str:
    """Digest of the values of `columns` of a Parquet file (and its recorded build
    parameters): what a table reading only those columns depends on."""
    _upstream_fingerprint(path)  # the same error as any upstream when it is not ours
    table = pq.read_table(path, columns=list(columns)).combine_chunks()
    table = table.replace_schema_metadata(None)  # the file's recorded key and counts
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h = hashlib.sha256(sink.getvalue().to_pybytes())
    h.update(json.dumps(parquet_stats(path).get("params", {}), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _upstream_fingerprint(path: Path) -> str:
    fp = parquet_key(path) if path.is_file() else None
    if fp is None:
        problem = "is missing or was not written by this pipeline"
        raise FileNotFoundError(materialize_first(path, path.stem, path.stem, problem))
    return fp


# --------------------------------------------------------------------------- staging


def staging_statement(table: RawTable) -> str:
    """The table's statement (`STAGING_SQL`), inside the duplicate-key rule of
    `staging/keys.sql` when the cohort relies on the table's key."""
    statement = load_sql(STAGING_SQL[table.name])
    if not table.key:
        return statement
    return load_sql("staging/keys", statement=statement, key=", ".join(table.key))


def build_staged(
    name: str,
    raw_root: Path,
    data_dir: Path,
    settings: Mapping[str, Any],
    force: bool = False,
    params: StagingParams | None = None,
) -> BuildResult:
    """Stage one raw table: validate, parse, filter, write `staged_<name>.parquet`."""
    params = params or StagingParams()
    table = RAW_TABLES[name]
    writable(data_dir)
    source = validate_raw(raw_root, table)  # raises before any output is replaced
    warnings = []
    if source is None:
        warnings.append(
            f"{raw_root / table.module}/{table.stem}.csv(.gz) is absent: this modality is "
            f"missing for every stay ({table.source}); staged_{name} is written empty."
        )
    out = _staged(data_dir, name)
    fingerprint = combine(code_version(f"staged_{name}"), file_identity([source]))
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        check_rejections(source or out, reused.stats, params.max_rejected_fraction)
        reused.warnings = warnings + staging_warnings(source, reused.stats)
        return reused
    # a truncated download must fail before any output is replaced: the whole-file gzip
    # check runs beside the parse (or is the streamed read's own inflate) and completes
    # before the output is committed (`sql.fast_read.stage_source`)
    con = connect(settings)
    try:
        stats = stage_source(
            con,
            table,
            source,
            lambda **read: stage_table(
                con,
                staging_statement(table),
                out,
                fingerprint,
                source,
                params.max_rejected_fraction,
                extra_stats={"source": str(source) if source else "absent"},
                **read,
            ),
        )
    finally:
        con.close()
    return BuildResult(out, fingerprint, stats, False, warnings + staging_warnings(source, stats))


# --------------------------------------------------------------------------- cohort tables


def _cxr_files(raw_root: Path) -> pa.Table:
    """Every JPG present under <root>/cxr/files (listed once per build)."""
    return pa.table({"path": pa.array(list_cxr_files(raw_root), type=pa.string())})


def _build(
    name: str,
    data_dir: Path,
    settings: Mapping[str, Any],
    force: bool,
    reads: Sequence[str],
    query: Callable[[duckdb.DuckDBPyConnection], str],
    stats: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]] = lambda con: {},
    key: Sequence[object] = (),
    raw_root: Path | None = None,
    code: str | None = None,
    order: str = "stay_id",
    upstream_keys: Mapping[str, str] | None = None,
) -> BuildResult:
    """One table of the cohort group: `<name>.parquet` (rows by `order`) from the tables it
    `reads` (and, with `raw_root`, the JPGs present, as `cxr_files`).

    Its key joins the SQL's hash, the upstream tables' keys, `key` and the JPG list; an
    unchanged key reuses the file. `query(con)` creates the views the table needs and
    returns its SELECT, which becomes the temp table `<name>_out`; `stats(con)` counts over it.
    `upstream_keys` replaces the recorded key of some of the `reads` (`columns_fingerprint`)."""
    out = data_dir / f"{name}.parquet"
    upstream = {
        r: (upstream_keys or {}).get(r) or _upstream_fingerprint(data_dir / f"{r}.parquet")
        for r in reads
    }
    jpgs = _cxr_files(raw_root) if raw_root is not None else None
    listing = (
        [hashlib.sha256("\n".join(jpgs["path"].to_pylist()).encode()).hexdigest()[:16]]
        if jpgs is not None
        else []
    )
    fingerprint = combine(code or code_version(name), upstream, *key, *listing)
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        return reused
    con = connect(settings)
    try:
        for r in reads:
            if r == "cohort":
                cohort_views(con, data_dir)
            else:
                parquet_view(con, r, data_dir / f"{r}.parquet")
        if jpgs is not None:
            con.register("cxr_files_arrow", jpgs)
            con.execute("CREATE TEMP TABLE cxr_files AS SELECT path FROM cxr_files_arrow")
        guarded(lambda: con.execute(f"CREATE TEMP TABLE {name}_out AS {query(con)}"), what=name)
        counts = guarded(lambda: stats(con), what=name)
        if jpgs is not None:
            counts["jpg_files_found"] = jpgs.num_rows
        counts["rows"] = write_parquet_atomic(
            con, f"SELECT * FROM {name}_out ORDER BY {order}", out, fingerprint, counts
        )
    finally:
        con.close()
    return BuildResult(out, fingerprint, counts, reused=False)


def build_cohort(
    raw_root: Path,
    data_dir: Path,
    settings: Mapping[str, Any],
    params: CohortParams | None = None,
    force: bool = False,
    tasks: Sequence[Task] = TASKS,
) -> BuildResult:
    """Stays, labels (one column per task), split and availability flags: `cohort.parquet`."""
    params = params or CohortParams()
    check_unique(list(tasks))

    def query(con: duckdb.DuckDBPyConnection) -> str:
        set_cohort_variables(con, params)
        for view in COHORT_VIEWS:
            sql_view(con, view)
        for task in tasks:
            _task_view(con, task)
        labels = "".join(f"CAST(t_{t.name}.label AS TINYINT) AS {t.name},\n    " for t in tasks)
        joins = "".join(
            f"LEFT JOIN task_{t.name} AS t_{t.name} ON t_{t.name}.stay_id = s.stay_id\n"
            for t in tasks
        )
        return load_sql("cohort/cohort", task_labels=labels, task_joins=joins)

    def stats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        flow = con.execute(load_sql("cohort/cohort_flow")).fetchall()
        return {
            "flow": [{"step": int(s), "rule": r, "stays": int(n)} for s, r, n in flow],
            "tasks": [t.name for t in tasks],
            **_cohort_stats(con, [t.name for t in tasks]),
            "modules_absent": [
                n
                for n in ("discharge", "radiology", "cxr_metadata")
                if parquet_stats(_staged(data_dir, n)).get("source") == "absent"
            ],
            "params": asdict(params),
        }

    reads = [f"staged_{n}" for n in STAGED_NAMES]
    code = code_version("cohort", tasks)
    return _build(
        "cohort", data_dir, settings, force, reads, query, stats, [asdict(params)], raw_root, code
    )


def build_ehr_features(
    data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """Per-stay aggregates of the kept EHR values in [intime - lookback, t0)."""

    cohort_path = data_dir / "cohort.parquet"

    def query(con: duckdb.DuckDBPyConnection) -> str:
        # the cohort with only the columns the key covers (a statement reading another fails)
        parquet_view(con, "cohort", cohort_path, EHR_COHORT_COLUMNS)
        con.execute("CREATE OR REPLACE TEMP VIEW cohort_stays AS SELECT * FROM cohort")
        sql_view(con, "features/ehr_events")
        return load_sql("features/ehr_features", feature_columns=feature_columns_sql())

    def stats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        per_var = con.execute(
            "SELECT variable, count(*) FILTER (WHERE kept), count(*) FILTER (WHERE NOT kept) "
            "FROM ehr_events GROUP BY variable ORDER BY variable"
        ).fetchall()
        return {
            "values_kept": int(sum(r[1] for r in per_var)),
            "values_dropped_implausible": int(sum(r[2] for r in per_var)),
            "dropped_implausible_by_variable": {r[0]: int(r[2]) for r in per_var if r[2]},
            "kept_by_variable": {r[0]: int(r[1]) for r in per_var},
        }

    reads = ["cohort", "staged_chartevents", "staged_labevents"]
    # keyed on the cohort columns it reads: a cohort rebuilt for new notes or X-rays (which
    # change has_notes, has_cxr, cxr_dicom_id only) reuses the features
    keys = {"cohort": columns_fingerprint(cohort_path, EHR_COHORT_COLUMNS)}
    return _build("ehr_features", data_dir, settings, force, reads, query, stats,
                  upstream_keys=keys)  # fmt: skip


def build_cohort_notes(
    data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """The notes each stay may use at t0 (ids and times only)."""

    def stats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        by_type = con.execute("SELECT note_type, count(*) FROM cohort_notes_out GROUP BY 1 ORDER BY 1").fetchall()
        stays = con.execute("SELECT count(DISTINCT stay_id) FROM cohort_notes_out").fetchone()
        return {
            "notes_by_type": {str(t): int(n) for t, n in by_type},
            "stays_with_notes": int(stays[0]) if stays else 0,
        }

    reads = ["cohort", "staged_discharge", "staged_radiology"]
    query = lambda con: load_sql("cohort/cohort_notes")  # noqa: E731
    order = "stay_id, charttime, note_id"
    return _build("cohort_notes", data_dir, settings, force, reads, query, stats, order=order)


def build_cohort_cxr(
    raw_root: Path, data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """The chosen frontal image per stay whose JPG exists."""
    reads = ["cohort", "staged_cxr_metadata"]
    query = lambda con: load_sql("cohort/cohort_cxr")  # noqa: E731
    return _build("cohort_cxr", data_dir, settings, force, reads, query, raw_root=raw_root)


def _task_view(con: duckdb.DuckDBPyConnection, task: Task) -> None:
    """`task_<name>`: the task's `(stay_id, label)`; one row per stay, labels 0/1/NULL."""
    try:
        con.execute(
            f"CREATE TEMP VIEW task_{task.name} AS SELECT stay_id, label FROM ({task.query()})"
        )
        row = con.execute(
            f"SELECT count(*) - count(DISTINCT stay_id), "
            f"count(*) FILTER (WHERE label IS NOT NULL AND label NOT IN (0, 1)) "
            f"FROM task_{task.name}"
        ).fetchone()
    except duckdb.Error as err:
        failed: str | None = type(err).__name__
    else:
        failed = None
    if failed is not None:  # raised outside the except block: DuckDB's message may quote rows
        raise ValueError(
            f"task {task.name}: its label query {task.sql_path} failed: {failed} "
            "(it must select stay_id and label from cohort_stays and the staged tables)"
        )
    assert row is not None
    if row[0] or row[1]:
        raise ValueError(
            f"task {task.name}: {task.sql_path} must return one row per stay with label 0, "
            f"1 or NULL; it returned {row[0]} repeated stay_id(s) and {row[1]} other label(s)"
        )


def _cohort_stats(con: duckdb.DuckDBPyConnection, tasks: list[str]) -> dict[str, Any]:
    rates = "".join(f"avg({t}) AS {t}, " for t in tasks)
    nulls = "".join(f"count(*) FILTER (WHERE {t} IS NULL) AS {t}_null, " for t in tasks)
    flags = "avg(has_ehr::INT) AS has_ehr, avg(has_notes::INT) AS has_notes, " \
        "avg(has_cxr::INT) AS has_cxr"
    per_split_rows = con.execute(
        f"SELECT split, count(*) AS stays, {rates}{nulls}{flags} "
        "FROM cohort_out GROUP BY ALL ORDER BY split"
    ).fetch_df()
    per_split = {
        str(r["split"]): {
            str(k): (int(v) if k == "stays" or str(k).endswith("_null") else _float(v))
            for k, v in r.items()
            if k != "split"
        }
        for r in per_split_rows.to_dict(orient="records")
    }
    patterns = con.execute(
        """
        SELECT concat_ws('+',
                   CASE WHEN has_ehr THEN 'EHR' END,
                   CASE WHEN has_notes THEN 'notes' END,
                   CASE WHEN has_cxr THEN 'CXR' END) AS pattern,
               count(*)
        FROM cohort_out GROUP BY ALL ORDER BY 2 DESC, 1
        """
    ).fetchall()
    total = con.execute(
        f"SELECT count(*) AS stays, count(DISTINCT subject_id) AS subjects, {rates}{flags} "
        "FROM cohort_out"
    ).fetch_df().to_dict(orient="records")[0]
    by_year_group = {
        str(g): {"stays": int(n), "has_cxr": rate, "outside_cxr_years": int(out)}
        for g, n, rate, out in con.execute(load_sql("cohort/cohort_year_groups")).fetchall()
    }
    return {
        "by_anchor_year_group": by_year_group,
        "stays": int(total["stays"]),
        "subjects": int(total["subjects"]),
        "prevalence": {t: _float(total[t]) for t in tasks},
        "availability": {f: _float(total[f]) for f in ("has_ehr", "has_notes", "has_cxr")},
        "per_split": per_split,
        "patterns": {(p or "none"): int(n) for p, n in patterns},
    }


def _float(v: Any) -> float | None:
    """A SQL average as a float; NULL (no rows, or no labels) as None."""
    return None if v is None or v != v else float(v)


# --------------------------------------------------------------------------- checks


def run_check(check: str, data_dir: Path, settings: Mapping[str, Any], tables: list[str]) -> int:
    """Run `sql/checks/<check>.sql` over the named output tables; returns its violations.

    `tables` are asset names (`cohort`, `staged_radiology`, ...); `ehr_events` is rebuilt
    from the staged tables when a check needs it.
    """
    con = connect(settings)
    try:
        for name in tables:
            if name == "cohort":
                cohort_views(con, data_dir)
            elif name == "ehr_events":
                sql_view(con, "features/ehr_events")
            else:
                parquet_view(con, name, data_dir / f"{name}.parquet")
        row = guarded(lambda: con.execute(load_sql(f"checks/{check}")).fetchone(), what=check)
    finally:
        con.close()
    return int(row[0]) if row and row[0] is not None else 0
