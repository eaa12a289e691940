"""Build the staged tables and the cohort tables from raw files: plain functions, no Dagster.

Every builder validates its inputs before writing, writes its Parquet atomically, and
reuses the existing file when the fingerprint of its inputs (SQL hash, parameters, raw
file identities or upstream fingerprints) is unchanged, so a re-run on unchanged inputs
recomputes nothing expensive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from plumbing.raw_layout import RAW_TABLES, RawInputError, RawTable
from plumbing.reuse import combine, file_identity, parquet_key, parquet_stats, reusable_parquet
from plumbing.settings import materialize_first
from plumbing.tasks import TASKS, Task, check_unique
from sql.errors import writable
from sql.runner import (
    VARIABLES_CSV,
    check_gzip,
    check_rejections,
    code_hash,
    connect,
    feature_columns_sql,
    list_cxr_files,
    load_sql,
    parquet_view,
    raw_view,
    set_interval,
    sql_view,
    stage_table,
    staging_warnings,
    validate_raw,
    write_parquet_atomic,
)

STAGED_NAMES = list(RAW_TABLES)  # patients, admissions, icustays, chartevents, ...
_USES_VARIABLES = {"chartevents", "labevents"}

# The SQL files each table asset runs (its code_version is their hash).
COHORT_SQL = [
    "macros",
    "cohort_candidates",
    "cohort_stays",
    "cohort_flow",
    "ehr_events",
    "cohort_notes",
    "cohort_cxr",
    "cohort",
    "cohort_year_groups",
]
ASSET_SQL: dict[str, list[str]] = {
    **{
        f"staged_{n}": ["macros", f"staged_{n}", *(["staged_keys"] if t.key else [])]
        for n, t in RAW_TABLES.items()
    },
    "cohort": COHORT_SQL,
    "ehr_features": ["macros", "ehr_events", "ehr_features"],
    "cohort_notes": ["macros", "cohort_notes"],
    "cohort_cxr": ["macros", "cohort_cxr"],
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


@dataclass(frozen=True)
class CohortParams:
    observation_window_hours: float = 48.0
    long_stay_days: float = 7.0
    readmission_days: float = 30.0


@dataclass(frozen=True)
class StagingParams:
    # more than this share of a table's rows dropped (malformed, duplicate, implausible)
    # fails the staging before any output is replaced; fewer are dropped with a warning
    max_rejected_fraction: float = 0.01


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


def _upstream_fingerprint(path: Path) -> str:
    fp = parquet_key(path) if path.is_file() else None
    if fp is None:
        problem = "is missing or was not written by this pipeline"
        raise FileNotFoundError(materialize_first(path, path.stem, path.stem, problem))
    return fp


# --------------------------------------------------------------------------- staging


def staging_statement(table: RawTable) -> str:
    """`sql/staged_<name>.sql`, inside the duplicate-key rule of `staged_keys.sql` when the
    cohort relies on the table's key."""
    statement = load_sql(f"staged_{table.name}")
    if not table.key:
        return statement
    return load_sql("staged_keys", statement=statement, key=", ".join(table.key))


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
    # a truncated download must fail before any output is replaced: the whole-file check
    # runs in a thread while DuckDB parses, and is awaited before the output is committed
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"check-{name}")
    checked = pool.submit(check_gzip, source) if source is not None else None
    con = connect(settings)
    failed: RawInputError | None = None
    try:
        raw_view(con, table, source)
        stats = stage_table(
            con,
            staging_statement(table),
            out,
            fingerprint,
            source,
            params.max_rejected_fraction,
            extra_stats={"source": str(source) if source else "absent"},
            before_commit=checked.result if checked is not None else None,
        )
    except RawInputError as err:
        failed = err
    finally:
        con.close()
        pool.shutdown(wait=True)
    if failed is not None:
        gzip_failure = checked.exception() if checked is not None else None
        raise (gzip_failure or failed) from None  # the gzip's own error names the real cause
    return BuildResult(out, fingerprint, stats, False, warnings + staging_warnings(source, stats))


# --------------------------------------------------------------------------- cohort


def _cxr_files_table(raw_root: Path) -> tuple[pa.Table, str]:
    files = list_cxr_files(raw_root)
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
    return pa.table({"path": pa.array(files, type=pa.string())}), digest


def _cohort_connection(
    data_dir: Path, settings: Mapping[str, Any], staged: list[str]
) -> duckdb.DuckDBPyConnection:
    con = connect(settings)
    for name in staged:
        parquet_view(con, f"staged_{name}", _staged(data_dir, name))
    return con


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
    upstream = {n: _upstream_fingerprint(_staged(data_dir, n)) for n in STAGED_NAMES}
    cxr_files, cxr_digest = _cxr_files_table(raw_root)
    out = data_dir / "cohort.parquet"
    fingerprint = combine(code_version("cohort", tasks), asdict(params), upstream, cxr_digest)
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        return reused
    con = _cohort_connection(data_dir, settings, STAGED_NAMES)
    try:
        set_interval(con, "observation_window", params.observation_window_hours * 3600)
        set_interval(con, "long_stay", params.long_stay_days * 86400)
        set_interval(con, "readmission_window", params.readmission_days * 86400)
        con.register("cxr_files_arrow", cxr_files)
        con.execute("CREATE TEMP TABLE cxr_files AS SELECT path FROM cxr_files_arrow")
        for view in [
            "cohort_candidates",
            "cohort_stays",
            "ehr_events",
            "cohort_notes",
            "cohort_cxr",
        ]:
            sql_view(con, view)
        flow = [
            {"step": int(s), "rule": r, "stays": int(n)}
            for s, r, n in con.execute(load_sql("cohort_flow")).fetchall()
        ]
        for task in tasks:
            _task_view(con, task)
        labels = "".join(f"CAST(t_{t.name}.label AS TINYINT) AS {t.name},\n    " for t in tasks)
        joins = "".join(
            f"LEFT JOIN task_{t.name} AS t_{t.name} ON t_{t.name}.stay_id = s.stay_id\n"
            for t in tasks
        )
        query = load_sql("cohort", task_labels=labels, task_joins=joins)
        con.execute(f"CREATE TEMP TABLE cohort_out AS {query}")
        stats = {
            "flow": flow,
            "tasks": [t.name for t in tasks],
            **_cohort_stats(con, [t.name for t in tasks]),
            "jpg_files_found": cxr_files.num_rows,
            "modules_absent": [
                n
                for n in ("discharge", "radiology", "cxr_metadata")
                if parquet_stats(_staged(data_dir, n)).get("source") == "absent"
            ],
            "params": asdict(params),
        }
        write_parquet_atomic(con, "SELECT * FROM cohort_out", out, fingerprint, stats)
    finally:
        con.close()
    return BuildResult(out, fingerprint, stats, reused=False)


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
        raise ValueError(
            f"task {task.name}: its label query {task.sql_path} failed: {type(err).__name__} "
            "(it must select stay_id and label from cohort_stays and the staged tables)"
        ) from None  # DuckDB's message may quote row values
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
        for g, n, rate, out in con.execute(load_sql("cohort_year_groups")).fetchall()
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


def _from_cohort(
    data_dir: Path, settings: Mapping[str, Any], staged: list[str]
) -> duckdb.DuckDBPyConnection:
    con = _cohort_connection(data_dir, settings, staged)
    parquet_view(con, "cohort_stays", data_dir / "cohort.parquet")
    return con


def build_ehr_features(
    data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """Per-stay aggregates of the kept EHR values in [intime - 6 h, t0)."""
    staged = ["chartevents", "labevents"]
    upstream = {n: _upstream_fingerprint(_staged(data_dir, n)) for n in staged}
    cohort_fp = _upstream_fingerprint(data_dir / "cohort.parquet")
    out = data_dir / "ehr_features.parquet"
    fingerprint = combine(code_version("ehr_features"), upstream, cohort_fp)
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        return reused
    con = _from_cohort(data_dir, settings, staged)
    try:
        sql_view(con, "ehr_events")
        per_var = con.execute(
            "SELECT variable, count(*) FILTER (WHERE kept), count(*) FILTER (WHERE NOT kept) "
            "FROM ehr_events GROUP BY variable ORDER BY variable"
        ).fetchall()
        stats: dict[str, Any] = {
            "values_kept": int(sum(r[1] for r in per_var)),
            "values_dropped_implausible": int(sum(r[2] for r in per_var)),
            "dropped_implausible_by_variable": {r[0]: int(r[2]) for r in per_var if r[2]},
            "kept_by_variable": {r[0]: int(r[1]) for r in per_var},
        }
        query = load_sql("ehr_features", feature_columns=feature_columns_sql())
        stats["rows"] = write_parquet_atomic(con, query, out, fingerprint, stats)
    finally:
        con.close()
    return BuildResult(out, fingerprint, stats, reused=False)


def build_cohort_notes(
    data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """The notes each stay may use at t0 (ids and times only)."""
    staged = ["discharge", "radiology"]
    upstream = {n: _upstream_fingerprint(_staged(data_dir, n)) for n in staged}
    cohort_fp = _upstream_fingerprint(data_dir / "cohort.parquet")
    out = data_dir / "cohort_notes.parquet"
    fingerprint = combine(code_version("cohort_notes"), upstream, cohort_fp)
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        return reused
    con = _from_cohort(data_dir, settings, staged)
    try:
        con.execute(f"CREATE TEMP TABLE notes_out AS {load_sql('cohort_notes')}")
        by_type = con.execute(
            "SELECT note_type, count(*) FROM notes_out GROUP BY ALL ORDER BY 1"
        ).fetchall()
        stays = con.execute("SELECT count(DISTINCT stay_id) FROM notes_out").fetchone()
        stats: dict[str, Any] = {
            "notes_by_type": {str(t): int(n) for t, n in by_type},
            "stays_with_notes": int(stays[0]) if stays else 0,
        }
        stats["rows"] = write_parquet_atomic(
            con,
            "SELECT * FROM notes_out ORDER BY stay_id, charttime, note_id",
            out,
            fingerprint,
            stats,
        )
    finally:
        con.close()
    return BuildResult(out, fingerprint, stats, reused=False)


def build_cohort_cxr(
    raw_root: Path, data_dir: Path, settings: Mapping[str, Any], force: bool = False
) -> BuildResult:
    """The chosen frontal image per stay whose JPG exists."""
    upstream = _upstream_fingerprint(_staged(data_dir, "cxr_metadata"))
    cohort_fp = _upstream_fingerprint(data_dir / "cohort.parquet")
    cxr_files, cxr_digest = _cxr_files_table(raw_root)
    out = data_dir / "cohort_cxr.parquet"
    fingerprint = combine(code_version("cohort_cxr"), upstream, cohort_fp, cxr_digest)
    reused = _reuse(out, fingerprint, force)
    if reused is not None:
        return reused
    con = _from_cohort(data_dir, settings, ["cxr_metadata"])
    try:
        con.register("cxr_files_arrow", cxr_files)
        con.execute("CREATE TEMP TABLE cxr_files AS SELECT path FROM cxr_files_arrow")
        stats: dict[str, Any] = {"jpg_files_found": cxr_files.num_rows}
        stats["rows"] = write_parquet_atomic(
            con,
            f"SELECT * FROM ({load_sql('cohort_cxr')}) ORDER BY stay_id",
            out,
            fingerprint,
            stats,
        )
    finally:
        con.close()
    return BuildResult(out, fingerprint, stats, reused=False)


# --------------------------------------------------------------------------- checks


def run_check(check: str, data_dir: Path, settings: Mapping[str, Any], tables: list[str]) -> int:
    """Run `sql/check_<check>.sql` over the named output tables; returns its violations.

    `tables` are asset names (`cohort`, `staged_radiology`, ...); `ehr_events` is rebuilt
    from the staged tables when a check needs it.
    """
    con = connect(settings)
    try:
        for name in tables:
            if name == "ehr_events":
                parquet_view(con, "cohort_stays", data_dir / "cohort.parquet")
                sql_view(con, "ehr_events")
            else:
                parquet_view(con, name, data_dir / f"{name}.parquet")
        row = con.execute(load_sql(f"check_{check}")).fetchone()
    finally:
        con.close()
    return int(row[0]) if row and row[0] is not None else 0
