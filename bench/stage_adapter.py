"""The staging code path under test: one raw table -> `staged_<table>.parquet` with DuckDB.

This calls the project's own staging builder, `sql.build.build_staged` (what the
`staged_<table>` assets run), with the settings that the `duckdb` resource gives by
default (`plumbing.resources.DuckDBSettings`: memory_limit 4GB, threads = all cores, spill
folder under the data dir). The settings are built here rather than by importing the
resource, so that the timed process does not pay for importing Dagster (~1 s), which the
asset's run worker has already paid.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

CODE_PATH = "sql.build.build_staged"


def duckdb_settings(data_dir: Path, threads: int = 0, memory_limit: str = "4GB") -> dict[str, Any]:
    """Same keys and defaults as `DuckDBSettings.settings(data_dir)`."""
    return {
        "memory_limit": memory_limit,
        "threads": threads or (os.cpu_count() or 1),
        "temp_directory": str(data_dir / ".duckdb_tmp"),
    }


def stage_one(
    table: str, raw_root: Path, data_dir: Path, threads: int = 0, memory_limit: str = "4GB"
) -> dict[str, Any]:
    """Stage `table` from `raw_root` into `data_dir/staged_<table>.parquet` (always recomputed)."""
    from sql.build import build_staged

    settings = duckdb_settings(data_dir, threads, memory_limit)
    t0 = time.perf_counter()
    result = build_staged(table, raw_root, data_dir, settings, force=True)
    return {
        "code_path": CODE_PATH,
        "out": str(result.path),
        "rows": int(result.stats.get("rows", -1)),
        "inner_s": time.perf_counter() - t0,
    }
