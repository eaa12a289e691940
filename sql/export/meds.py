"""The cohort in MEDS (Medical Event Data Standard) layout, built with DuckDB: no Dagster.

    <root>/data/{train,tuning,held_out}/0.parquet     subject_id, time, code, numeric_value
    <root>/metadata/codes.parquet                     code, description, parent_codes
    <root>/metadata/subject_splits.parquet            subject_id, split
    <root>/labels/<task>/labels.parquet               subject_id, prediction_time, boolean_value

`<root>/metadata/dataset.json` is written by the asset (it names the pipeline's version).
Events: sql/export/meds_events.sql (only values before each stay's t0); labels:
sql/export/meds_labels.sql; the leak check: sql/export/check_meds_before_t0.sql.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sql.build import cohort_views
from sql.runner import code_hash, connect, load_sql, parquet_view, sql_view, write_parquet_atomic

# our split name -> MEDS' (meds.train_split, meds.tuning_split, meds.held_out_split)
MEDS_SPLITS = {"train": "train", "val": "tuning", "test": "held_out"}
EVENTS_SQL = ["macros", "features/ehr_events", "export/meds_events", "export/meds_codes"]
LABELS_SQL = ["export/meds_labels", "export/meds_subject_splits"]


def meds_code_version(what: str) -> str:
    """Hash of the SQL that the `meds_events` or `meds_labels` asset runs."""
    return code_hash(EVENTS_SQL if what == "events" else LABELS_SQL)


def meds_root(data_dir: Path) -> Path:
    return data_dir / "meds"


def event_files(root: Path) -> list[Path]:
    return [root / "data" / split / "0.parquet" for split in MEDS_SPLITS.values()]


def label_file(root: Path, task: str) -> Path:
    return root / "labels" / task / "labels.parquet"


def _count(con: Any, query: str) -> int:
    row = con.execute(query).fetchone()
    return int(row[0]) if row else 0


def build_meds_events(data_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Write the data shards (one per split) and codes.parquet; returns counts."""
    root = meds_root(data_dir)
    con = connect(settings)
    try:
        cohort_views(con, data_dir)
        for name in ("patients", "chartevents", "labevents"):
            parquet_view(con, f"staged_{name}", data_dir / f"staged_{name}.parquet")
        sql_view(con, "features/ehr_events")
        stats: dict[str, Any] = {"events_by_split": {}}
        for ours, theirs in MEDS_SPLITS.items():
            query = load_sql("export/meds_events", split=ours)
            con.execute(f"CREATE OR REPLACE TEMP TABLE part AS {query}")
            out = root / "data" / theirs / "0.parquet"
            stats["events_by_split"][theirs] = write_parquet_atomic(
                con, "SELECT * FROM part ORDER BY subject_id, time NULLS FIRST, code", out
            )
        stats["codes"] = write_parquet_atomic(
            con, load_sql("export/meds_codes"), root / "metadata" / "codes.parquet"
        )
        files = ", ".join(f"'{p}'" for p in event_files(root))
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW meds_events AS SELECT * FROM read_parquet([{files}])"
        )
        stats["events"] = _count(con, "SELECT count(*) FROM meds_events")
        stats["static_events"] = _count(con, "SELECT count(*) FROM meds_events WHERE time IS NULL")
        stats["subjects"] = _count(con, "SELECT count(DISTINCT subject_id) FROM meds_events")
        stats["distinct_codes"] = _count(con, "SELECT count(DISTINCT code) FROM meds_events")
    finally:
        con.close()
    return stats


def build_meds_labels(
    data_dir: Path, settings: Mapping[str, Any], tasks: Iterable[str]
) -> dict[str, Any]:
    """Write one label file per task and metadata/subject_splits.parquet; returns counts."""
    root = meds_root(data_dir)
    con = connect(settings)
    try:
        parquet_view(con, "cohort", data_dir / "cohort.parquet")
        stats: dict[str, Any] = {"labels": {}, "positives": {}}
        for task in tasks:
            query = load_sql("export/meds_labels", label=f'"{task}"')
            stats["labels"][task] = write_parquet_atomic(con, query, label_file(root, task))
            stats["positives"][task] = _count(
                con,
                f"SELECT count(*) FROM read_parquet('{label_file(root, task)}') WHERE boolean_value",
            )
        stats["subjects"] = write_parquet_atomic(
            con,
            load_sql("export/meds_subject_splits"),
            root / "metadata" / "subject_splits.parquet",
        )
    finally:
        con.close()
    return stats


def count_events_not_before_t0(data_dir: Path, settings: Mapping[str, Any]) -> int:
    """sql/export/check_meds_before_t0.sql over the written export: 0 means no leak."""
    con = connect(settings)
    try:
        cohort_views(con, data_dir)  # with the cohort's lookback
        files = ", ".join(f"'{p}'" for p in event_files(meds_root(data_dir)))
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW meds_events AS SELECT * FROM read_parquet([{files}])"
        )
        return _count(con, load_sql("export/check_meds_before_t0"))
    finally:
        con.close()
