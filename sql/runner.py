"""Run the `.sql` files of this folder with DuckDB: no Dagster here.

- SQL is loaded by name (`load_sql("cohort")` reads `sql/cohort.sql`) and hashed
  (`code_hash`), so each asset's `code_version` follows exactly the files it runs.
- Raw MIMIC files are resolved as `.csv.gz` or `.csv` and validated (file present, required
  columns in the header, readable gzip) with errors that name the file and the fix.
- Connections get `memory_limit`, `threads` and a spill `temp_directory`.
- Parquet is written atomically (`plumbing.atomic`), with its reuse key and counts in the
  file's key-value metadata (`plumbing.reuse`), so an unchanged re-run can reuse it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from plumbing.atomic import atomic_path, process_temp_dir, temp_path
from plumbing.raw_layout import RawInputError, RawTable, raw_file
from plumbing.reuse import parquet_metadata

SQL_DIR = Path(__file__).resolve().parent
VARIABLES_CSV = SQL_DIR / "variables.csv"

# --------------------------------------------------------------------------- SQL files


def sql_path(name: str) -> Path:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"No SQL statement named {name!r} (expected {path}).")
    return path


def load_sql(name: str, **blocks: str) -> str:
    """The statement in `sql/<name>.sql`, with `{{block}}` placeholders filled in."""
    text = sql_path(name).read_text(encoding="utf-8")
    for key, value in blocks.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in _strip_comments(text):
        raise ValueError(f"sql/{name}.sql has an unfilled {{{{placeholder}}}}.")
    return text


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def code_hash(names: Iterable[str], data_files: Iterable[Path] = ()) -> str:
    """A short hash of the SQL files (and data tables) one asset runs: its code_version."""
    h = hashlib.sha256()
    for name in sorted(set(names)):
        h.update(name.encode() + b"\0" + sql_path(name).read_bytes() + b"\0")
    for path in sorted(set(data_files)):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def load_variables() -> list[dict[str, Any]]:
    with VARIABLES_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def variable_names() -> list[str]:
    """Variables in table order, each once."""
    return list(dict.fromkeys(row["variable"] for row in load_variables()))


def feature_columns_sql() -> str:
    """The `{{feature_columns}}` block of ehr_features.sql, one group per variable."""
    parts = []
    for var in variable_names():
        f = f"FILTER (WHERE e.variable = '{var}')"
        parts += [
            f"avg(e.value) {f} AS {var}_mean",
            f"min(e.value) {f} AS {var}_min",
            f"max(e.value) {f} AS {var}_max",
            f"first(e.value ORDER BY e.charttime DESC, e.value DESC) {f} AS {var}_last",
            f"count(e.value) {f} AS {var}_count",
        ]
    return ",\n    ".join(parts)


# --------------------------------------------------------------------------- raw files


def read_header(path: Path) -> list[str]:
    """Column names of a CSV(.gz); RawInputError naming the file when unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                line = f.readline()
        else:
            with path.open(encoding="utf-8", newline="") as f:
                line = f.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise RawInputError(
            f"{path}: cannot be read as {'gzip-compressed ' if path.suffix == '.gz' else ''}"
            f"CSV ({type(err).__name__}: {err}). The file is probably corrupt or truncated: "
            f"check it with `gzip -t {path}` and download it again."
        ) from err
    return next(csv.reader(io.StringIO(line)), [])


def validate_raw(root: Path, table: RawTable) -> Path | None:
    """The file to read for `table`; None when an optional module lacks it.

    Raises RawInputError for a missing required file or a missing column.
    """
    path = raw_file(root, table.name)
    if path is None:
        if table.optional:
            return None
        raise RawInputError(
            f"Required file {root / table.relative} (or .csv) is missing. Expected the "
            f"PhysioNet layout <root>/{table.module}/{table.stem}.csv.gz with columns "
            f"{', '.join(table.columns)}. Download the '{table.module}' module of {table.source} "
            f"and point MOE_MIMIC_ROOT at the folder that holds hosp/ and icu/."
        )
    header = read_header(path)
    missing = [c for c in table.columns if c not in header]
    if missing:
        raise RawInputError(
            f"{path} lacks the column(s) {', '.join(missing)} (found: {', '.join(header) or 'no header'}). "
            f"Expected the {table.source} file {table.relative} with columns "
            f"{', '.join(table.columns)}; download it again from PhysioNet."
        )
    return path


def _inflate_module() -> Any:
    """ISA-L's zlib-compatible inflater (about 3x faster) when installed, else zlib."""
    try:
        from isal import isal_zlib

        return isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
        return zlib


def check_gzip(path: Path, chunk: int = 1 << 24) -> None:
    """Decompress a .gz file end to end (streaming, constant memory) so that a truncated or
    corrupt download is a clear error before any output is replaced from it: DuckDB alone
    reads a truncated gzip up to the break without complaint. The staging runs it in a
    thread beside DuckDB's own read (both release the GIL), so it costs a core, not time."""
    if path.suffix != ".gz":
        return
    z = _inflate_module()
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, z.error)
    try:
        with path.open("rb") as f:
            d = z.decompressobj(wbits=31)
            pending = False  # input given to the current gzip member, not yet at its end
            while block := f.read(chunk):
                while block:
                    pending = True
                    d.decompress(block, 1 << 22)
                    block = d.unconsumed_tail
                    if d.eof:  # member complete: the next one may follow
                        block = d.unused_data + block
                        d = z.decompressobj(wbits=31)
                        pending = False
            if pending:
                raise EOFError("the compressed stream ends before its end-of-stream marker")
    except errors as err:
        raise RawInputError(
            f"{path}: corrupt or truncated gzip ({type(err).__name__}: {err}). Check it with "
            f"`gzip -t {path}` and download it again from PhysioNet. No output was replaced."
        ) from err


def list_cxr_files(raw_root: Path) -> list[str]:
    """Relative paths (`files/pNN/p<subject>/s<study>/<dicom>.jpg`) of every JPG present.

    One scandir walk of `<root>/cxr/files` (real MIMIC-CXR-JPG: ~377k images).
    """
    base = raw_root / "cxr"
    files = base / "files"
    found: list[str] = []
    if not files.is_dir():
        return found
    stack = [files]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.name.endswith(".jpg") and entry.is_file(follow_symlinks=True):
                    found.append(Path(entry.path).relative_to(base).as_posix())
    found.sort()
    return found


# --------------------------------------------------------------------------- DuckDB


def connect(settings: Mapping[str, Any]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded by memory_limit / threads, spilling to temp_directory,
    with the macros of `sql/macros.sql` and the `variables` table loaded."""
    temp = process_temp_dir(str(settings["temp_directory"]))  # owner-only, one per process
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": str(settings["memory_limit"]),
            "threads": int(settings["threads"]),
            "temp_directory": str(temp),
            "preserve_insertion_order": False,
        },
    )
    con.execute(sql_path("macros").read_text(encoding="utf-8"))
    con.execute(
        "CREATE TEMP TABLE variables AS SELECT * FROM read_csv(?, header = true, "
        "columns = {'variable': 'VARCHAR', 'source': 'VARCHAR', 'itemid': 'INTEGER', "
        "'item_label': 'VARCHAR', 'item_unit': 'VARCHAR', 'unit': 'VARCHAR', "
        "'low': 'DOUBLE', 'high': 'DOUBLE'})",
        [str(VARIABLES_CSV)],
    )
    return con


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duckdb_message(err: BaseException) -> str:
    """DuckDB's error without the raw line it quotes (it may hold note text or patient data)."""
    head = str(err).split("Original Line:", 1)[0].strip()
    hint = " invalid UTF-8 bytes;" if "unicode" in str(err).lower() else ""
    return f"{type(err).__name__}: {head};{hint} offending line withheld, it may hold patient data"


def raw_view(con: duckdb.DuckDBPyConnection, table: RawTable, path: Path | None) -> None:
    """`raw_<name>`: the raw file as all-VARCHAR columns (parsed with explicit types and
    formats in the staging SQL), or an empty table with the same columns when absent."""
    view = f"raw_{table.name}"
    if path is None:
        cols = ", ".join(f"CAST(NULL AS VARCHAR) AS {_ident(c)}" for c in table.columns)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {cols} WHERE false")
        return
    # Notes: lines up to 16 MiB, and the serial reader: DuckDB's parallel scanner rejects
    # null_padding with quoted newlines once a file spans more than one buffer (real note
    # tables always do; gzip decoding is serial anyway).
    big = (
        ", max_line_size = 16777216, buffer_size = 33554432, parallel = false"
        if table.module == "note"
        else ""
    )
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM read_csv({_lit(str(path))}, "
            "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
            f"compression = 'auto', null_padding = true{big})"
        )
    except duckdb.Error as err:
        raise RawInputError(
            f"{path}: DuckDB could not read it ({duckdb_message(err)}). The file is probably "
            "corrupt, truncated or not UTF-8: check it (`gzip -t`, `iconv -f utf-8 -t utf-8`) "
            "and download it again from PhysioNet. No output was replaced."
        ) from err


def parquet_view(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: materialize the asset {name!r} first "
            f"(dagster asset materialize --select '+{name}')."
        )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({_lit(str(path))})"
    )


def sql_view(con: duckdb.DuckDBPyConnection, name: str, **blocks: str) -> None:
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS\n{load_sql(name, **blocks)}")


def set_interval(con: duckdb.DuckDBPyConnection, name: str, seconds: float) -> None:
    micros = round(seconds * 1_000_000)
    con.execute(f"SET VARIABLE {name} = to_microseconds(CAST({micros} AS BIGINT))")


def write_parquet_atomic(
    con: duckdb.DuckDBPyConnection,
    query: str,
    out: Path,
    fingerprint: str = "",
    stats: Mapping[str, Any] | None = None,
) -> int:
    """COPY `query` to `out` atomically, its reuse key and counts in the file. Returns rows."""
    kv = ", ".join(f"{k}: {_lit(v)}" for k, v in parquet_metadata(fingerprint, stats).items())
    with atomic_path(out) as tmp:
        rows = con.execute(
            f"COPY ({query}) TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd, "
            f"KV_METADATA {{{kv}}})"
        ).fetchone()
    return int(rows[0]) if rows else 0


def stage_table(
    con: duckdb.DuckDBPyConnection,
    sql_name: str,
    out: Path,
    fingerprint: str,
    source: Path | None,
    extra_stats: Mapping[str, Any] | None = None,
    before_commit: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Run a staging statement (its rows carry `_reject`: NULL keeps the row, else the
    reason it is dropped), write the kept rows atomically, return row and reject counts.
    `before_commit` runs before the output is replaced; if it raises, nothing is."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # the parsed rows with their reasons, beside the output, named like an atomic-write temp
    scratch = temp_path(out.with_name(f"{out.name}.parsed"))  # names this process
    try:
        try:
            con.execute(f"COPY ({load_sql(sql_name)}) TO {_lit(str(scratch))} (FORMAT parquet)")
        except duckdb.Error as err:
            if "Could not write" in str(err) or "No space left" in str(err):
                raise OSError(
                    f"Cannot write {out.parent} ({duckdb_message(err)}): the disk is full or the "
                    "folder is not writable. Free space or point MOE_DATA_DIR (and "
                    "MOE_DUCKDB_TEMP_DIR) elsewhere. No output was replaced."
                ) from err
            where = source if source is not None else sql_name
            raise RawInputError(
                f"{where}: DuckDB could not read it ({duckdb_message(err)}). A gzip or "
                f"CSV error means the file is corrupt or truncated: check it with `gzip -t` "
                f"and download it again from PhysioNet. No output was replaced."
            ) from err
        rejected = dict(
            con.execute(
                f"SELECT _reject, count(*) FROM read_parquet({_lit(str(scratch))}) "
                "WHERE _reject IS NOT NULL GROUP BY _reject ORDER BY _reject"
            ).fetchall()
        )
        stats: dict[str, Any] = {
            "rows_dropped": int(sum(rejected.values())),
            "dropped_by_reason": {k: int(v) for k, v in rejected.items()},
            **dict(extra_stats or {}),
        }
        kept_query = (
            f"SELECT * EXCLUDE (_reject) FROM read_parquet({_lit(str(scratch))}) "
            "WHERE _reject IS NULL"
        )
        stats["rows"] = int(
            con.execute(f"SELECT count(*) FROM ({kept_query})").fetchone()[0]  # type: ignore[index]
        )
        if before_commit is not None:
            before_commit()
        write_parquet_atomic(con, kept_query, out, fingerprint, stats)
    finally:
        scratch.unlink(missing_ok=True)
    return stats
