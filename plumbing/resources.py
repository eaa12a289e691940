"""Typed Dagster resources: where data lives and how DuckDB may use the machine."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, Failure
from pydantic import Field

from plumbing.data_dir import open_data_dir
from plumbing.settings import ProjectPaths, materialize_first, project_paths


class ProjectResource(ConfigurableResource):
    """Paths of the run. Empty `mimic_root` means the demo profile (generated raw files)."""

    data_dir: str = Field(description="Output folder ($MOE_DATA_DIR, default ./data).")
    mimic_root: str = Field(
        default="", description="PhysioNet root with hosp/ icu/ note/ cxr/ ($MOE_MIMIC_ROOT)."
    )

    def paths(self) -> ProjectPaths:
        """The run's paths, the data folder opened for writing (plumbing/data_dir.py:
        owner-only, source record checked, dead runs' temp files removed)."""
        return open_data_dir(
            ProjectPaths(
                data_dir=Path(self.data_dir).expanduser().resolve(),
                mimic_root=Path(self.mimic_root).expanduser().resolve()
                if self.mimic_root
                else None,
            )
        )


def require_table(paths: ProjectPaths, name: str, downstream: str) -> Path:
    """`paths.table(name)`, or a Failure that says how to build it for `downstream`."""
    path = paths.table(name)
    if not path.exists():
        raise Failure(description=materialize_first(path, name, downstream))
    return path


class DuckDBSettings(ConfigurableResource):
    """Limits for every DuckDB connection, so real chartevents stages on a 24 GiB machine.

    Not dagster-duckdb's `DuckDBResource` (one database, a connection per step): the
    pipeline's SQL runs on in-memory connections over Parquet files (`sql.runner.connect`),
    and this resource only carries the settings each of them gets."""

    memory_limit: str = Field(default="4GB", description="DuckDB memory_limit; spills beyond it.")
    threads: int = Field(default=0, ge=0, description="DuckDB threads; 0 means all cores.")
    temp_directory: str = Field(
        default="", description="Spill folder; empty means $MOE_DATA_DIR/.duckdb_tmp."
    )

    def settings(self, data_dir: Path) -> dict[str, str | int]:
        return {
            "memory_limit": self.memory_limit,
            "threads": self.threads or (os.cpu_count() or 1),
            "temp_directory": self.temp_directory or str(data_dir / ".duckdb_tmp"),
        }


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources from the environment: MOE_DATA_DIR, MOE_MIMIC_ROOT, MOE_DUCKDB_*."""
    paths = project_paths()
    return {
        "project": ProjectResource(
            data_dir=str(paths.data_dir),
            mimic_root=str(paths.mimic_root) if paths.mimic_root else "",
        ),
        "duckdb": DuckDBSettings(
            memory_limit=os.environ.get("MOE_DUCKDB_MEMORY_LIMIT", "4GB"),
            threads=int(os.environ.get("MOE_DUCKDB_THREADS", "0")),
            temp_directory=os.environ.get("MOE_DUCKDB_TEMP_DIR", ""),
        ),
    }
