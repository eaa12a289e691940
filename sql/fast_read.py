"""Fast raw read for the two big event tables (chartevents, labevents): Polars parses the
CSV(.gz) on every core, DuckDB runs the unchanged staging statement over the result.

DuckDB reads a `.csv.gz` serially (one gzip stream, one thread); Polars inflates and parses
it in parallel. Here Polars only tokenises (every column a string, exactly what
`runner.raw_view`'s `all_varchar` read gives the staging SQL) and drops the rows whose item
id it reads as an integer outside the table's variables: a *superset* pre-filter, because
every string Polars reads as an integer DuckDB's `TRY_CAST` reads as the same integer, and
strings Polars cannot read (`' 220045'`, `'220045.0'`, empty) are kept for the SQL to
decide. So the staging statement sees the same candidate rows in the same order, and its
typing, item-id filter, rejection reasons and counts are the statement's own.

Everything around the read stays as it is (`sql.build.build_staged`): the whole-file gzip
check runs beside the read and is awaited before the output is replaced, the write is
atomic, the fingerprint is the same. When Polars cannot read a file (bad UTF-8, ragged
rows, a header it sees differently), the staging falls back to DuckDB's own reader, whose
error (or result) is today's. It is opt-in (`MOE_STAGING_READER=polars`): measured on the
2-core machine at 8 M rows it was not reliably faster than DuckDB's own reader (best of 3:
9.3 s against 6.1 s; Polars' own staging 4.9 s), because the staging statement over the
candidate rows, not the parse, is the larger half; see bench/RESULTS.md.

Polars writes the candidate rows in file order to a scratch Parquet file (lz4, in DuckDB's
spill folder, removed afterwards) that DuckDB reads with insertion order preserved, so the
staged Parquet is byte-identical between runs on the same input, and the same bytes as
DuckDB's own reader stages.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from plumbing.raw_layout import RawTable
from sql.runner import raw_view

__all__ = ["FAST_TABLES", "enabled", "polars_raw_view", "stage_with_fast_read"]

# table -> `variables.source` of the item ids its staging statement keeps
FAST_TABLES = {"chartevents": "chart", "labevents": "lab"}
ENV = "MOE_STAGING_READER"
T = TypeVar("T")


def enabled(table: RawTable, path: Path | None) -> bool:
    """Whether `table` at `path` goes through the Polars read."""
    return (
        path is not None
        and table.name in FAST_TABLES
        and os.environ.get(ENV, "duckdb").strip().lower() == "polars"
        and importlib.util.find_spec("polars") is not None
    )


def polars_raw_view(con: duckdb.DuckDBPyConnection, table: RawTable, path: Path) -> Path:
    """`raw` (the view the staging statements read): the table's columns as strings
    (empty -> NULL), rows in file order, rows whose item id is certainly not a variable of
    the table left out. Polars streams them into a scratch Parquet file in DuckDB's spill
    folder (returned: the caller removes it); a file rather than an Arrow stream, because
    DuckDB knows a file's size and builds its item-id join on the variables, scanning the
    rows in order and in parallel."""
    import polars as pl

    ids = [
        int(r[0])
        for r in con.execute(
            "SELECT itemid FROM variables WHERE source = ? ORDER BY itemid",
            [FAST_TABLES[table.name]],
        ).fetchall()
    ]
    spill = Path(str(con.execute("SELECT current_setting('temp_directory')").fetchone()[0]))  # type: ignore[index]
    spill.mkdir(parents=True, exist_ok=True)
    scratch = spill / f".raw_{table.name}-{uuid.uuid4().hex[:8]}.parquet"
    item = pl.col("itemid").cast(pl.Int32, strict=False)
    try:
        (
            pl.scan_csv(
                path,
                infer_schema=False,
                quote_char='"',
                empty_string_is_null=True,
                encoding="utf8",
                truncate_ragged_lines=False,
            )
            .select(list(table.columns))
            .filter(item.is_in(ids) | item.is_null())
            .sink_parquet(scratch, compression="lz4", maintain_order=True)
        )
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM read_parquet('{scratch}')"
    )
    return scratch


def stage_with_fast_read(
    con: duckdb.DuckDBPyConnection, table: RawTable, path: Path | None, run: Callable[[], T]
) -> T:
    """Set up `raw` (Polars when `enabled`, else DuckDB's reader) and `run()` the
    staging; if Polars cannot read the file, DuckDB's reader decides, as it does today."""
    # rows of the staged file in file order, so two runs write the same bytes
    con.execute("SET preserve_insertion_order = true")
    if not enabled(table, path):
        raw_view(con, table, path)
        return run()
    assert path is not None
    try:
        scratch: Path | None = polars_raw_view(con, table, path)
    except Exception:  # noqa: BLE001 - any read failure (bad UTF-8, ragged rows, a gzip
        # cut short: Polars' OSError): DuckDB's reader and the gzip check decide, as today
        scratch = None
    if scratch is None:  # outside the except block: Polars' error (it may quote the row)
        raw_view(con, table, path)  # must not become the context of the error raised here
        return run()
    try:
        return run()
    finally:
        scratch.unlink(missing_ok=True)
