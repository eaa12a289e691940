"""Fast raw read for the two big event tables (chartevents, labevents).

Three readers, chosen by `MOE_STAGING_READER` (`reader()`):

- `stream` (the default): the file is inflated once, by ISA-L in a thread, in pieces of
  about `PIECE_BYTES` that end at a record boundary (a newline outside quotes). Polars
  tokenises each piece (on every core; every column a string, exactly what
  `runner.raw_view`'s `all_varchar` read gives the staging SQL) and drops the rows whose
  item id it reads as an integer outside the table's variables: a *superset* pre-filter,
  because every string Polars reads as an integer DuckDB's `TRY_CAST` reads as the same
  integer, and strings Polars cannot read (`' 220045'`, `'220045.0'`, empty) are kept for
  the typing to decide. The typing is the staging statement's, done by Polars in the
  writing thread while the next piece is tokenised (`sql.fast_typing`: the same casts,
  item-id filter, rejection reasons and unparsed columns, exactly; the statement's
  per-piece cost in DuckDB was most of the gap to Polars). Its rows go, as they are, into
  one scratch Parquet file per piece, in file order. A piece with a value
  `sql.fast_typing` cannot decide goes through DuckDB and the unchanged statement
  instead. That one inflate
  is also the whole-file gzip integrity check (ISA-L verifies every member's CRC and
  length, and a stream that stops before its end-of-stream marker is refused), and it
  ends before the output can be replaced, because the last piece is only handed over
  after it: the separate `check_gzip` pass, a second inflate, is not needed. Memory stays
  flat: at most two pieces are inflated ahead of the parse.
- `polars` (opt-in, the previous candidate): Polars reads the whole `.csv.gz` itself into
  one scratch Parquet file of candidate rows; `check_gzip` runs beside it.
- `duckdb`: DuckDB's own (serial) gzip reader over the whole file, `check_gzip` beside it.

With every reader the staging statement (or its exact Polars equivalent) sees the same
candidate rows in the same order, so the typing, item-id filter, rejection reasons and
counts are the statement's, and the staged Parquet is byte-identical between readers and
between runs (the connection preserves insertion order; each piece's scratch file is one
row group, as DuckDB writes it, so the final write groups the rows as before). When
Polars cannot read a file (bad UTF-8, ragged rows, a header it sees differently), the
staging falls back to DuckDB's own reader, whose error (or result) is today's. Everything else stays as it is (`sql.build.build_staged`): the
write is atomic and the fingerprint is the same.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import queue
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from plumbing.atomic import TEMP_PATTERN
from plumbing.raw_layout import RawInputError, RawTable
from sql.errors import gzip_error, read_error
from sql.fast_typing import TypingSpec, spec_for, type_piece
from sql.runner import ParsedWriter, _inflate_module, check_gzip, inflate_members, raw_view

__all__ = [
    "FAST_TABLES",
    "PIECE_BYTES",
    "READERS",
    "enabled",
    "polars_raw_view",
    "reader",
    "stage_source",
    "stage_with_fast_read",
]

# table -> `variables.source` of the item ids its staging statement keeps
FAST_TABLES = {"chartevents": "chart", "labevents": "lab"}
ENV = "MOE_STAGING_READER"
READERS = ("stream", "polars", "duckdb")
DEFAULT_READER = "stream"
PIECE_BYTES = 24 << 20  # inflated bytes per piece (~250k rows; under glibc's 32 MiB mmap cap,
# so pieces reuse heap memory instead of faulting in fresh pages)
T = TypeVar("T")


def variable_ids(con: duckdb.DuckDBPyConnection, table: RawTable) -> list[int]:
    """The item ids of `table`'s variables (the `variables` table), ascending: the rows a
    read may keep before the statement runs."""
    rows = con.execute(
        "SELECT itemid FROM variables WHERE source = ? ORDER BY itemid",
        [FAST_TABLES[table.name]],
    ).fetchall()
    return [int(r[0]) for r in rows]


def reader(table: RawTable, path: Path | None) -> str:
    """The reader `table` at `path` goes through: `MOE_STAGING_READER` (default `stream`)
    for the big event tables when Polars is installed, else `duckdb`."""
    if path is None or table.name not in FAST_TABLES:
        return "duckdb"
    choice = os.environ.get(ENV, DEFAULT_READER).strip().lower() or DEFAULT_READER
    if choice not in READERS:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(READERS)}")
    if choice != "duckdb" and importlib.util.find_spec("polars") is None:
        return "duckdb"
    return choice


def enabled(table: RawTable, path: Path | None) -> bool:
    """Whether `table` at `path` goes through the opt-in whole-file Polars read."""
    return reader(table, path) == "polars"


def polars_raw_view(con: duckdb.DuckDBPyConnection, table: RawTable, path: Path) -> Path:
    """`raw` (the view the staging statements read): the table's columns as strings
    (empty -> NULL), rows in file order, rows whose item id is certainly not a variable of
    the table left out. Polars streams them into a scratch Parquet file in DuckDB's spill
    folder (returned: the caller removes it); a file rather than an Arrow stream, because
    DuckDB knows a file's size and builds its item-id join on the variables, scanning the
    rows in order and in parallel."""
    import polars as pl

    ids = variable_ids(con, table)
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


class _PolarsRefused(Exception):
    """Polars could not read a piece (or the header): DuckDB's reader decides."""


def _record_end(buf: bytes, quotes_before: int = 0) -> int:
    """The index after the last newline of `buf` outside quotes, `quotes_before` quote
    characters having come since the last record boundary (a doubled quote inside a field
    counts twice, so parity still tells); 0 when there is none."""
    nl = buf.rfind(b"\n")
    if nl < 0:
        return 0
    quotes = quotes_before + buf.count(b'"', 0, nl)
    while quotes % 2:
        prev = buf.rfind(b"\n", 0, nl)
        if prev < 0:
            return 0
        quotes -= buf.count(b'"', prev, nl)
        nl = prev
    return nl + 1


def _chunks(path: Path, read_bytes: int = 1 << 20, max_out: int = 1 << 23) -> Iterator[bytes]:
    """The file's bytes, inflated when it is a `.gz`, in blocks of at most `max_out`. The
    inflate is `runner.inflate_members`, as in `check_gzip` (every member, to its end), so a
    truncated or corrupt download raises its RawInputError when the blocks run out."""
    gz = path.suffix == ".gz"
    z = _inflate_module()
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, z.error)
    problem: Exception | None = None
    try:
        with path.open("rb") as f:
            if not gz:
                while block := f.read(max_out):
                    yield block
                return
            yield from inflate_members(f, z, read_bytes, max_out)
    except errors as err:
        problem = gzip_error(path, type(err).__name__) if gz else read_error(path, err)
    if problem is not None:
        raise problem from None  # outside the except block: no cause, no context


def _quotes(data: bytes) -> int:
    """The quote characters in `data` (a search first: most blocks have none)."""
    return data.count(b'"') if b'"' in data else 0


def _pieces(path: Path, size: int) -> Iterator[bytes]:
    """The inflated file in pieces of about `size` bytes, each ending at a record end.
    A piece is cut inside its last block, so each byte is copied once (by the join)."""
    parts: list[bytes] = []
    held = quotes = 0  # bytes and quote characters in `parts`
    for data in _chunks(path):
        held += len(data)
        end = _record_end(data, quotes) if held >= size else 0
        if not end:  # short of a piece, or no record ends in this block: keep reading
            parts.append(data)
            quotes += _quotes(data)
            continue
        parts.append(data[:end])
        yield b"".join(parts) if len(parts) > 1 else parts[0]
        parts = [data[end:]] if end < len(data) else []
        held = len(data) - end
        quotes = _quotes(parts[0]) if parts else 0
    if parts:
        yield b"".join(parts)


def _produce(items: Callable[[], Iterator[Any]], out: queue.Queue[Any], stop: threading.Event) -> None:
    """Put `items()` into `out` (each item, then None; or the error raised), until `stop`."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items():
            if not put(item):
                return
    except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
        put(err)
        return
    put(None)


def _drain(source: queue.Queue[Any], stop: threading.Event) -> Iterator[Any]:
    """The items `_produce` puts into `source`, raising the error it hands over."""
    while not stop.is_set():
        try:
            item = source.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item  # ours (the inflate's RawInputError, _PolarsRefused): no row content
        yield item


def _candidate_tables(pieces: Iterator[bytes], table: RawTable, ids: list[int]) -> Iterator[Any]:
    """Per piece, its candidate rows as strings (a Polars frame)."""
    header: list[str] | None = None
    for piece in pieces:
        if header is None:
            header, piece = _header(piece)
        yield _candidates(piece, header, table, ids)


def _header(piece: bytes) -> tuple[list[str], bytes]:
    """The header's column names and the rest of the first piece."""
    nl = piece.find(b"\n")
    line = piece if nl < 0 else piece[:nl]
    names: list[str] | None = None
    if line.count(b'"') % 2 == 0:
        try:
            text = line.decode("utf-8-sig").removesuffix("\r")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            names = next(csv.reader([text]), [])
    if not names or len(set(names)) != len(names):
        raise _PolarsRefused  # a header Polars could see differently: DuckDB decides
    return names, b"" if nl < 0 else piece[nl + 1 :]


def _valid_utf8(piece: bytes) -> bool:
    """Whether the whole piece is UTF-8 (DuckDB checks every column, Polars the ones it
    reads): arrow's validation over the bytes in place."""
    import numpy as np
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(piece)], dtype=np.int64))
    arr = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(piece)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _typed_or_candidates(frame: Any, ids: list[int], spec: TypingSpec | None) -> tuple[bool, Any]:
    """(True, the statement's rows for the piece's candidate rows, typed by Polars) or,
    for a piece `sql.fast_typing` cannot decide, (False, the candidate rows as strings),
    as Arrow tables."""
    import polars as pl

    typed = None
    if spec is not None:
        try:
            typed = type_piece(frame, spec, ids)
        except Exception:  # noqa: BLE001 - whatever Polars refuses, the statement decides
            typed = None
    # an empty piece: DuckDB writes a file of no row group, pyarrow one of an empty one
    if typed is None or typed.height == 0:
        return False, frame.to_arrow(compat_level=pl.CompatLevel.newest())  # views: no copy
    return True, typed.to_arrow(compat_level=pl.CompatLevel.newest())


def _candidates(piece: bytes, header: list[str], table: RawTable, ids: list[int]) -> Any:
    """The piece's candidate rows (`polars_raw_view`'s pre-filter) as a Polars frame."""
    import polars as pl

    item = pl.col("itemid").cast(pl.Int32, strict=False)
    frame = None
    if _valid_utf8(piece):
        try:
            frame = (
                pl.scan_csv(
                    piece,
                    has_header=False,
                    schema={name: pl.String for name in header},
                    quote_char='"',
                    empty_string_is_null=True,
                    encoding="utf8",
                    truncate_ragged_lines=False,
                    raise_if_empty=False,
                )
                .select(list(table.columns))
                .filter(item.is_in(ids) | item.is_null())
                .collect()
            )
        except Exception:  # noqa: BLE001 - ragged rows, bad quoting, ...: DuckDB decides
            frame = None
    if frame is None:  # outside the except block: Polars' error may quote the row
        raise _PolarsRefused
    return frame


def _write_scratch(rows: Any, path: Path) -> None:
    """One piece's typed rows as one Parquet row group, uncompressed (read once, soon):
    the final COPY reads it as DuckDB reads its own scratch file of the piece. Dictionary
    pages, as DuckDB writes them: a third of the plain size (450 -> 150 MB of scratch at
    32 M chartevents rows, about 2 GB less at MIMIC-IV's 433 M) for 0.1 CPU s at 8 M."""
    import pyarrow.parquet as pq

    pq.write_table(
        rows,
        path,
        row_group_size=max(rows.num_rows, 1),
        compression="none",
        use_dictionary=True,
        write_statistics=False,
    )


def _piece_path(scratch: Path, i: int) -> Path:
    """`scratch` (a temp name of this process) with the piece number in its name part."""
    m = TEMP_PATTERN.match(scratch.name)
    if m is None:
        return scratch.with_name(f"{scratch.name}-{i:05d}")
    return scratch.with_name(
        f".{m['name']}-{i:05d}.{m['host']}_{m['pid']}_{m['rand']}.tmp"
    )


def streamed_writer(
    con: duckdb.DuckDBPyConnection, table: RawTable, path: Path, piece_bytes: int = 0
) -> ParsedWriter:
    """`stage_table`'s `write_parsed` for the streamed read: the statement's rows for
    each piece's candidate rows (typed by Polars, or by the statement in DuckDB), one
    scratch Parquet file per piece, in file order."""
    ids = variable_ids(con, table)
    spec = spec_for(table.name)

    def write(statement: str, scratch: Path) -> list[Path]:
        # three stages, each on its own thread: inflate (ISA-L) -> pieces -> tokenise and
        # pre-filter (Polars) -> candidate rows -> typing (Polars, or the statement in
        # DuckDB) and the scratch write (this thread)
        stop = threading.Event()
        pieces: queue.Queue[Any] = queue.Queue(maxsize=2)
        candidates: queue.Queue[Any] = queue.Queue(maxsize=1)
        size = piece_bytes or PIECE_BYTES
        stages = [
            threading.Thread(
                target=_produce,
                args=(lambda: _pieces(path, size), pieces, stop),
                name=f"inflate-{table.name}",
                daemon=True,
            ),
            threading.Thread(
                target=_produce,
                args=(
                    lambda: _candidate_tables(_drain(pieces, stop), table, ids),
                    candidates,
                    stop,
                ),
                name=f"tokenise-{table.name}",
                daemon=True,
            ),
        ]
        for stage in stages:
            stage.start()
        files: list[Path] = []
        view = f"raw_piece_{uuid.uuid4().hex[:8]}"
        # one DuckDB thread per piece: its rows stay in file order (with more, DuckDB's
        # Parquet writer interleaves them); the other core inflates and tokenises
        threads = con.execute("SELECT current_setting('threads')").fetchone()
        con.execute("SET threads = 1")
        try:
            for frame in _drain(candidates, stop):
                # typed here, while the other thread tokenises the next piece
                typed, rows = _typed_or_candidates(frame, ids, spec)
                files.append(_piece_path(scratch, len(files)))
                if typed:  # the statement's rows already: written as they are
                    _write_scratch(rows, files[-1])
                    continue
                con.register(view, rows)
                try:
                    # a table, not a view over the Arrow data: DuckDB's join over an Arrow
                    # scan does not keep the rows in order, even on one thread
                    con.execute(f"CREATE OR REPLACE TEMP TABLE {view}_t AS SELECT * FROM {view}")
                    con.execute(f"CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM {view}_t")
                    con.execute(
                        f"COPY ({statement}) TO '{files[-1]}' "
                        "(FORMAT parquet, COMPRESSION uncompressed)"  # scratch: read once, soon
                    )
                finally:
                    con.unregister(view)
            con.execute(f"DROP TABLE IF EXISTS {view}_t")
            if not files:
                raise _PolarsRefused  # nothing at all, not even a header
        except BaseException:
            for f in files:
                f.unlink(missing_ok=True)
            raise
        finally:
            con.execute(f"SET threads = {int(threads[0]) if threads else 1}")
            stop.set()
            for stage in stages:
                stage.join()
        return files

    return write


Run = Callable[..., T]


def _checked(
    con: duckdb.DuckDBPyConnection, table: RawTable, path: Path | None, run: Run[T]
) -> T:
    """DuckDB's reader (or the opt-in whole-file Polars read), with the whole-file gzip
    check in a thread beside it, awaited before the output is committed: a truncated
    download fails before any output is replaced, with the gzip's own error."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"check-{table.name}")
    checked = pool.submit(check_gzip, path) if path is not None else None
    failed: RawInputError | None = None
    try:
        result = stage_with_fast_read(
            con, table, path, lambda: run(before_commit=checked.result if checked else None)
        )
    except RawInputError as err:
        failed = err
    finally:
        pool.shutdown(wait=True)
    if failed is not None:
        gzip_failure = checked.exception() if checked is not None else None
        raise (gzip_failure or failed) from None  # the gzip's own error names the real cause
    return result


def stage_source(
    con: duckdb.DuckDBPyConnection, table: RawTable, path: Path | None, run: Run[T]
) -> T:
    """Run the staging of `table` from `path` through its `reader`:
    `run(before_commit=..., write_parsed=...)` is `runner.stage_table` with the rest bound.
    The streamed read checks the gzip in its own inflate; if Polars cannot read the file,
    DuckDB's reader and the separate check decide, as they do today."""
    # rows of the staged file in file order, so two runs write the same bytes
    con.execute("SET preserve_insertion_order = true")
    if path is not None and not enabled(table, path) and reader(table, path) == "stream":
        try:
            return run(write_parsed=streamed_writer(con, table, path))
        except _PolarsRefused:
            pass  # DuckDB's reader decides, below (outside the except block)
    return _checked(con, table, path, run)


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
