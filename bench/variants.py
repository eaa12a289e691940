"""Candidate speed-ups of the staging code path, measured beside it (not used by the pipeline).

Each candidate keeps the project's staging SQL and builder untouched and changes only how
the raw gzip file reaches DuckDB:

- `isal_plain`: decompress with ISA-L (`isal.igzip`, ~3-5x faster than zlib/`zcat`) to a
  plain `.csv` in a scratch root, then run `sql.build.build_staged` on it: DuckDB then
  parses the plain file on all cores instead of one gzip stream on one thread.
- `arrow_stream`: no scratch file: ISA-L decompresses in a background thread
  (`isal.igzip_threaded`), pyarrow's multithreaded CSV reader parses only the columns the
  staging statement needs (as strings, like `all_varchar`), and DuckDB reads the record
  batches as the `raw` view; then the same staging statement and atomic write.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.stage_adapter import duckdb_settings


def isal_plain(
    table: str, raw_root: Path, data_dir: Path, threads: int = 0, memory_limit: str = "4GB"
) -> dict[str, Any]:
    from isal import igzip

    from plumbing.raw_layout import RAW_TABLES, raw_file
    from sql.build import build_staged

    t0 = time.perf_counter()
    spec = RAW_TABLES[table]
    src = raw_file(raw_root, table)
    assert src is not None
    scratch = data_dir / ".plain_root"
    (scratch / spec.module).mkdir(parents=True, exist_ok=True)
    plain = scratch / spec.module / f"{spec.stem}.csv"
    try:
        with igzip.open(src, "rb") as fin, open(plain, "wb") as fout:
            shutil.copyfileobj(fin, fout, 8 << 20)
        settings = duckdb_settings(data_dir, threads, memory_limit)
        result = build_staged(table, scratch, data_dir, settings, force=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "code_path": "isal -> plain csv -> sql.build.build_staged",
        "out": str(result.path),
        "rows": int(result.stats.get("rows", -1)),
        "inner_s": time.perf_counter() - t0,
    }


def arrow_stream(
    table: str, raw_root: Path, data_dir: Path, threads: int = 0, memory_limit: str = "4GB"
) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from isal import igzip_threaded

    from plumbing.raw_layout import RAW_TABLES
    from plumbing.reuse import combine, file_identity
    from sql.build import StagingParams, code_version, staging_statement
    from sql.runner import connect, stage_table, validate_raw

    t0 = time.perf_counter()
    spec = RAW_TABLES[table]
    src = validate_raw(raw_root, spec)
    assert src is not None
    out = data_dir / f"staged_{table}.parquet"
    fingerprint = combine(code_version(f"staged_{table}"), file_identity([src]))
    con = connect(duckdb_settings(data_dir, threads, memory_limit))
    cols = list(spec.columns)
    stream = igzip_threaded.open(src, "rb", threads=1)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                include_columns=cols,
                column_types=dict.fromkeys(cols, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        con.register(f"raw_{table}_arrow", reader)
        # all_varchar semantics as in raw_view: empty field -> NULL
        proj = ", ".join(f"nullif({c}, '') AS {c}" for c in cols)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW raw AS SELECT {proj} FROM raw_{table}_arrow"
        )
        statement = staging_statement(spec)
        limit = StagingParams().max_rejected_fraction
        stats = stage_table(con, statement, out, fingerprint, src, limit)
    finally:
        con.close()
        stream.close()
    return {
        "code_path": "isal thread -> pyarrow CSV -> DuckDB (same SQL)",
        "out": str(out),
        "rows": int(stats.get("rows", -1)),
        "inner_s": time.perf_counter() - t0,
    }


VARIANTS = {"isal_plain": isal_plain, "arrow_stream": arrow_stream}
