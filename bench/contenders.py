"""The staging contenders, each run as `python -m bench.contenders NAME IN OUT` in a subprocess.

All do the same work on `chartevents.csv.gz`: keep the rows whose item id is one of the
cohort's chart variables (`sql/variables.csv`) and that have a numeric `valuenum`, keep
the columns that the staged table has, and write them out.

- `duckdb`: the project's staging code path (`bench.stage_adapter.stage_one`), to Parquet,
  with its default reader (`MOE_STAGING_READER=stream`, `sql.fast_read`: one ISA-L inflate
  that is also the gzip check, Polars tokenising and typing each piece exactly as the
  staging statement would (`sql.fast_typing`; DuckDB's statement for a piece it cannot
  decide), DuckDB's final zstd write with the counts).
- `rowreader`: `csv.DictReader` row by row over `gzip.open`, the approach of the
  mimic3-benchmarks extraction (`read_events_table_by_row`) that MedFuse and others still
  use; it streams kept rows to CSV with `csv.DictWriter`, as those scripts do (no typing,
  no Parquet: this favours it).
- `pandas`: `pd.read_csv(chunksize=1_000_000, usecols=...)`, filter, parse the two
  timestamps, append each chunk to one Parquet file (pyarrow `ParquetWriter`).
- `polars`: `pl.scan_csv` (typed key columns) -> the same columns, item-id and non-null
  `valuenum` filter, both timestamps parsed -> `sink_parquet` (Polars' streaming engine).
- `duckdb_polars`: our staging with the opt-in whole-file Polars read
  (`MOE_STAGING_READER=polars`).
- `duckdb_reader`: our staging with DuckDB's own gzip reader and the separate gzip check
  beside it (`MOE_STAGING_READER=duckdb`; the default before the streamed read).
- `duckdb_isal`, `duckdb_arrow`: earlier candidate speed-ups of our path (`bench.variants`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
from pathlib import Path

COLUMNS = ["subject_id", "hadm_id", "stay_id", "itemid", "charttime", "storetime",
           "valuenum", "valueuom"]  # fmt: skip


def chart_itemids() -> set[int]:
    from bench.chartgen import variable_itemids

    return set(variable_itemids())


def run_rowreader(src: Path, out: Path) -> int:
    ids = {str(i) for i in chart_itemids()}
    n = 0
    with gzip.open(src, "rt", newline="") as f, open(out, "w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, fieldnames=COLUMNS)
        writer.writeheader()
        for row in reader:
            if row["itemid"] not in ids or row["valuenum"] == "":
                continue
            writer.writerow({c: row[c] for c in COLUMNS})
            n += 1
    return n


def run_pandas(src: Path, out: Path, chunksize: int = 1_000_000) -> int:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = sorted(chart_itemids())
    n = 0
    writer: pq.ParquetWriter | None = None
    dtypes = {"subject_id": "int64", "hadm_id": "Int64", "stay_id": "Int64", "itemid": "int64",
              "valuenum": "float64", "valueuom": "string", "charttime": "string",
              "storetime": "string"}  # fmt: skip
    for chunk in pd.read_csv(src, usecols=COLUMNS, dtype=dtypes, chunksize=chunksize):
        chunk = chunk[chunk["itemid"].isin(ids) & chunk["valuenum"].notna()]
        for col in ("charttime", "storetime"):
            chunk[col] = pd.to_datetime(chunk[col], format="%Y-%m-%d %H:%M:%S", errors="coerce")
        table = pa.Table.from_pandas(chunk[COLUMNS], preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, compression="zstd")
        writer.write_table(table)
        n += len(chunk)
    if writer is not None:
        writer.close()
    return n


def run_polars(src: Path, out: Path) -> int:
    import polars as pl

    ids = sorted(chart_itemids())
    types = {"subject_id": pl.Int64, "hadm_id": pl.Int64, "stay_id": pl.Int64,
             "itemid": pl.Int32, "valuenum": pl.Float64, "valueuom": pl.String,
             "charttime": pl.String, "storetime": pl.String}  # fmt: skip
    fmt = "%Y-%m-%d %H:%M:%S"
    (
        pl.scan_csv(src, schema_overrides=types)
        .select(COLUMNS)
        .filter(pl.col("itemid").is_in(ids) & pl.col("valuenum").is_not_null())
        .with_columns(
            pl.col("charttime").str.to_datetime(fmt, strict=False),
            pl.col("storetime").str.to_datetime(fmt, strict=False),
        )
        .sink_parquet(out, compression="zstd")
    )
    return int(pl.scan_parquet(out).select(pl.len()).collect().item())


def run_duckdb(src: Path, out: Path, threads: int, memory_limit: str) -> int:
    from bench.stage_adapter import stage_one

    # src is <root>/icu/chartevents.csv.gz; out is a folder used as MOE_DATA_DIR
    raw_root = src.parent.parent
    out.mkdir(parents=True, exist_ok=True)
    info = stage_one("chartevents", raw_root, out, threads=threads, memory_limit=memory_limit)
    print(json.dumps(info), file=sys.stderr)
    return int(info["rows"])


def run_variant(name: str, src: Path, out: Path, threads: int, memory_limit: str) -> int:
    from bench.variants import VARIANTS

    fn = VARIANTS["isal_plain" if name == "isal" else "arrow_stream"]
    out.mkdir(parents=True, exist_ok=True)
    info = fn("chartevents", src.parent.parent, out, threads=threads, memory_limit=memory_limit)
    print(json.dumps(info), file=sys.stderr)
    return int(info["rows"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "name",
        choices=["duckdb", "duckdb_polars", "duckdb_reader", "rowreader", "pandas", "polars",
                 "duckdb_isal", "duckdb_arrow"],  # fmt: skip
    )
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--memory-limit", default="4GB")
    a = ap.parse_args(argv)
    if a.name == "rowreader":
        n = run_rowreader(a.src, a.out)
    elif a.name == "pandas":
        n = run_pandas(a.src, a.out)
    elif a.name == "polars":
        n = run_polars(a.src, a.out)
    elif a.name in ("duckdb", "duckdb_polars", "duckdb_reader"):
        if a.name != "duckdb":
            os.environ["MOE_STAGING_READER"] = a.name.removeprefix("duckdb_").replace(
                "reader", "duckdb"
            )
        n = run_duckdb(a.src, a.out, a.threads, a.memory_limit)
    else:
        n = run_variant(a.name.removeprefix("duckdb_"), a.src, a.out, a.threads, a.memory_limit)
    print(json.dumps({"rows": n}))


if __name__ == "__main__":
    main()
