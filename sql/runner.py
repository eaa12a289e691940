"""Run the `.sql` files of this folder with DuckDB: no Dagster here.

- SQL is loaded by name (`load_sql("cohort/cohort")` reads `sql/cohort/cohort.sql`) and hashed
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from plumbing.atomic import atomic_path, process_temp_dir, temp_path
from plumbing.raw_layout import RawInputError, RawTable, raw_file
from plumbing.reuse import parquet_metadata
from sql.errors import guarded, gzip_error, writable

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
    """The `{{feature_columns}}` block of ehr_features.sql, one group per variable: the
    pivot of the per-(stay, variable) aggregates (at most one row per stay and variable)."""
    parts = []
    for var in variable_names():
        f = f"FILTER (WHERE e.variable = '{var}')"
        parts += [
            f"any_value(e.mean) {f} AS {var}_mean",
            f"any_value(e.min) {f} AS {var}_min",
            f"any_value(e.max) {f} AS {var}_max",
            f"any_value(e.last) {f} AS {var}_last",
            f"coalesce(any_value(e.count) {f}, 0) AS {var}_count",
        ]
    return ",\n    ".join(parts)


# --------------------------------------------------------------------------- raw files


def read_header(path: Path) -> list[str]:
    """Column names of a CSV(.gz); a byte-order mark before them is accepted (Excel and
    some exports write one). RawInputError naming the file and cause when unreadable."""

    def first_line() -> str:
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            return str(f.readline())

    return next(csv.reader(io.StringIO(guarded(first_line, source=path))), [])


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


def inflate_members(f: BinaryIO, z: Any, read_bytes: int, max_out: int) -> Iterator[bytes]:
    """Inflate every gzip member of `f` (`z`: zlib or isal_zlib), each to its end-of-stream
    marker, in blocks of at most `max_out`; EOFError when the last member is cut short.
    One loop for the integrity check and the streamed read (`sql.fast_read`)."""
    d = z.decompressobj(wbits=31)
    pending = False  # input given to the current gzip member, not yet at its end
    while block := f.read(read_bytes):
        while block:
            pending = True
            data = d.decompress(block, max_out)
            block = d.unconsumed_tail
            if d.eof:  # member complete: the next one may follow
                block = d.unused_data + block
                d = z.decompressobj(wbits=31)
                pending = False
            if data:
                yield data
    if pending:
        raise EOFError("the compressed stream ends before its end-of-stream marker")


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
            for _ in inflate_members(f, z, chunk, 1 << 22):
                pass
    except errors as err:
        problem = gzip_error(path, type(err).__name__)
    else:
        return
    raise problem from None  # outside the except block: no cause, no context


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
    base = Path(str(settings["temp_directory"]))
    writable(base)  # a clear error naming the folder, before DuckDB's own
    temp = process_temp_dir(base)  # owner-only, one per process
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


def raw_view(con: duckdb.DuckDBPyConnection, table: RawTable, path: Path | None) -> None:
    """`raw`: the raw file as all-VARCHAR columns (parsed with explicit types and formats
    by the staging statement), or an empty table with the same columns when absent."""
    view = "raw"
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
    guarded(
        lambda: con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM read_csv({_lit(str(path))}, "
            "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"', "
            f"compression = 'auto', null_padding = true{big})"
        ),
        source=path,
    )


def parquet_view(
    con: duckdb.DuckDBPyConnection, name: str, path: Path, columns: Sequence[str] | None = None
) -> None:
    """The temp view `name` over the Parquet file `path` (only `columns`, when given)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: materialize the asset {name!r} first "
            f"(dagster asset materialize --select '+{name}')."
        )
    cols = ", ".join(_ident(c) for c in columns) if columns else "*"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} FROM read_parquet({_lit(str(path))})"
    )


def sql_view(con: duckdb.DuckDBPyConnection, name: str, **blocks: str) -> None:
    """The view named after `sql/<folder>/<view>.sql` (`name` is `folder/view`)."""
    view = name.rsplit("/", 1)[-1]
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS\n{load_sql(name, **blocks)}")


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


ParsedWriter = Callable[[str, Path], list[Path]]


def _copy_parsed(con: duckdb.DuckDBPyConnection) -> ParsedWriter:
    """The default `write_parsed`: one COPY of the statement over `raw` to `scratch`."""

    def write(statement: str, scratch: Path) -> list[Path]:
        con.execute(f"COPY ({statement}) TO {_lit(str(scratch))} (FORMAT parquet)")
        return [scratch]

    return write


def stage_table(
    con: duckdb.DuckDBPyConnection,
    statement: str,
    out: Path,
    fingerprint: str,
    source: Path | None,
    max_rejected: float,
    extra_stats: Mapping[str, Any] | None = None,
    before_commit: Callable[[], object] | None = None,
    write_parsed: ParsedWriter | None = None,
) -> dict[str, Any]:
    """Run a staging statement and write its kept rows atomically; return the counts.

    The statement's rows carry `_reject` (NULL keeps the row, else why it is dropped) and
    `_unparsed` (the columns of a kept row whose value is present but does not parse, so
    it is stored as NULL). When more than `max_rejected` of the rows would be dropped, it
    raises before the output is replaced (`check_rejections`). `before_commit` runs before
    the output is replaced; if it raises, nothing is.

    `write_parsed(statement, scratch)` writes the statement's rows, in file order, to
    scratch Parquet files named like `scratch` and returns them in order (default: one
    COPY over `raw`; `sql.fast_read`'s streamed read writes one per piece of the file)."""
    # the parsed rows with their reasons, beside the output, named like an atomic-write temp
    scratch = temp_path(out.with_name(f"{out.name}.parsed"))  # names this process
    writer = write_parsed or _copy_parsed(con)
    files: list[Path] = []

    def write() -> None:
        files.extend(writer(statement, scratch))

    try:
        guarded(write, source=source, out=out, what=out.stem)
        parsed = "read_parquet([" + ", ".join(_lit(str(f)) for f in files) + "])"
        # one scan for every count: (reason, unparsed columns) groups
        groups = con.execute(
            f"SELECT _reject, _unparsed, count(*) FROM {parsed} GROUP BY ALL"
        ).fetchall()
        rejected: dict[str, int] = {}
        unparsed: dict[str, int] = {}
        kept_rows = 0
        for reason, cols, n in groups:
            if reason is not None:
                rejected[str(reason)] = rejected.get(str(reason), 0) + int(n)
                continue
            kept_rows += int(n)
            for col in str(cols).split(" ") if cols is not None else ():
                unparsed[col] = unparsed.get(col, 0) + int(n)
        kept = f"SELECT * EXCLUDE (_reject, _unparsed) FROM {parsed} WHERE _reject IS NULL"
        stats: dict[str, Any] = {
            "rows": kept_rows,
            "rows_dropped": sum(rejected.values()),
            "dropped_by_reason": dict(sorted(rejected.items())),
            **(
                {"values_unparsed_by_column": dict(sorted(unparsed.items()))}
                if unparsed
                else {}
            ),
            **dict(extra_stats or {}),
        }
        if before_commit is not None:
            before_commit()
        check_rejections(source or out, stats, max_rejected)
        write_parquet_atomic(con, kept, out, fingerprint, stats)
    finally:
        for f in files or [scratch]:
            f.unlink(missing_ok=True)
    return stats


def _by_reason(counts: Mapping[str, int]) -> str:
    return "; ".join(f"{reason}: {n}" for reason, n in counts.items())


def check_rejections(source: Path, stats: Mapping[str, Any], max_rejected: float) -> None:
    """RawInputError when more than `max_rejected` of a table's rows are dropped; it names
    the file and the count per reason (each reason names its column), never a value."""
    dropped, total = int(stats["rows_dropped"]), int(stats["rows_dropped"]) + int(stats["rows"])
    if total and dropped / total > max_rejected:
        raise RawInputError(
            f"{source}: {dropped} of {total} rows ({dropped / total:.1%}) would be dropped, more "
            f"than max_rejected_fraction = {max_rejected:.1%}. By reason: "
            f"{_by_reason(stats['dropped_by_reason'])}. Values are not shown (they may be "
            "patient data). Was the file produced by another MIMIC version, or edited? To "
            "accept the drops, raise max_rejected_fraction in the config of this asset. "
            "No output was replaced."
        )


def staging_warnings(source: Path | None, stats: Mapping[str, Any]) -> list[str]:
    """WARNING lines for rows dropped and values that did not parse: counts only."""
    out = []
    total = int(stats.get("rows", 0)) + int(stats.get("rows_dropped", 0))
    if stats.get("rows_dropped"):
        out.append(
            f"{source}: {stats['rows_dropped']} of {total} rows dropped. By reason: "
            f"{_by_reason(stats['dropped_by_reason'])}."
        )
    if stats.get("values_unparsed_by_column"):
        out.append(
            f"{source}: values present but not parseable, kept as empty (NULL), by column: "
            f"{_by_reason(stats['values_unparsed_by_column'])}."
        )
    return out
