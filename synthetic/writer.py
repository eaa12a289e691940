"""Streaming gzip CSV writers with deterministic bytes (gzip mtime=0)."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import TracebackType
from typing import IO

import pyarrow as pa
import pyarrow.csv as pacsv


class GzCsvWriter:
    """Append pyarrow tables to one ``.csv.gz`` file, header written once.

    Strings are quoted only when needed (``quote`` = True, e.g. for note text) or
    never (``quote`` = False, the default, which fails loudly if a value would
    need quoting). Nulls are written as empty fields, as in MIMIC.
    """

    def __init__(self, path: Path, columns: list[str], quote: bool = False, level: int = 4):
        self.path = path
        self.columns = columns
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw: IO[bytes] = open(path, "wb")  # noqa: SIM115
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=level)
        self._gz.write((",".join(columns) + "\n").encode())
        self._opts = pacsv.WriteOptions(
            include_header=False, quoting_style="needed" if quote else "none"
        )
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table.column_names != self.columns:
            raise ValueError(f"{self.path.name}: columns {table.column_names} != {self.columns}")
        pacsv.write_csv(table, self._gz, self._opts)
        self.rows += table.num_rows

    def close(self) -> None:
        self._gz.close()
        self._raw.close()

    def __enter__(self) -> GzCsvWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
