"""What the user reads when a raw file or the data folder is the problem.

Two rules for every error that leaves `sql/`:
- it names the real cause and the real fix: the encoding problem and where (file, line,
  byte offset), the CSV structure problem and its line, the folder that cannot be written;
- it carries no row content anywhere in its chain. DuckDB quotes the offending line
  ("Original Line: ..." with a whole radiology report), pyarrow the offending row, Python's
  `UnicodeDecodeError` holds the bytes it failed on. So the project's error is built from
  a category and numbers (never from the library's text) and raised outside the `except`
  block that caught the library's error: no `__cause__`, no `__context__`.

`guarded(path, fn)` is the one place that turns such an error into ours; every DuckDB or
pyarrow read of a raw file goes through it (`sql.runner`).
"""

from __future__ import annotations

import codecs
import errno
import gzip
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from plumbing.atomic import temp_path
from plumbing.raw_layout import RawInputError

T = TypeVar("T")
LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.Error,
    pa.ArrowException,
    UnicodeError,
    zlib.error,
    EOFError,
)
_NOT_REPLACED = "No output was replaced."
_SQL_MISTAKES = (duckdb.BinderException, duckdb.ParserException, duckdb.CatalogException)


class OutputFolderError(OSError):
    """The data folder (or DuckDB's spill folder) cannot be written."""


def folder_error(folder: Path, cause: str) -> OutputFolderError:
    return OutputFolderError(
        f"Cannot write {folder} ({cause}): the folder is read-only or not yours, or the disk "
        "is full. Make it writable, free space, or point MOE_DATA_DIR (and "
        f"MOE_DUCKDB_TEMP_DIR) at a folder you can write. {_NOT_REPLACED}"
    )


def _open_bytes(path: Path):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def first_invalid_utf8(path: Path, chunk: int = 1 << 22) -> tuple[int, int] | None:
    """(line, byte offset) of the first byte sequence that is not UTF-8, counted in the
    decompressed data from 1 and 0; None when the whole file decodes. Lines are physical
    lines (a note's own line breaks count), as `sed -n '<line>p'` would number them."""
    offset, line, pending = 0, 1, b""
    with _open_bytes(path) as f:
        while True:
            block = f.read(chunk)
            data = pending + block
            try:
                _, used = codecs.utf_8_decode(data, "strict", not block)
            except UnicodeDecodeError as err:
                return line + data.count(b"\n", 0, err.start), offset + err.start
            line += data.count(b"\n", 0, used)
            offset += used
            pending = data[used:]
            if not block:
                return None


def _line(text: str) -> int | None:
    found = re.search(r"(?:on line|line:?|row #)\s*(\d+)", text, re.IGNORECASE)
    return int(found.group(1)) if found else None


def gzip_error(path: Path, kind: str) -> RawInputError:
    return RawInputError(
        f"{path}: corrupt or truncated gzip ({kind}). Check it with `gzip -t {path}` and "
        f"download it again from PhysioNet. {_NOT_REPLACED}"
    )


def writable(folder: Path) -> None:
    """Fail before any work when `folder` cannot be written (read-only, not ours, full)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / "write-probe")  # a dead run's probe is cleaned up as such
        probe.touch()
        probe.unlink()
    except OSError as err:
        problem = folder_error(folder, err.strerror or type(err).__name__)
    else:
        return
    raise problem from None


_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT})


def _write_failed(err: BaseException) -> bool:
    """A failed write of ours: DuckDB's words, an OS errno, or pyarrow's (the streamed read's
    scratch files: "Error writing bytes to file ... [errno 27] File too large")."""
    if not isinstance(err, OSError | duckdb.IOException):
        return False
    if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
        return True
    text = str(err).lower()
    return any(s in text for s in ("no space left", "could not write", "read-only file system",
                                   "error writing bytes", "file too large", "quota exceeded"))


def read_error(path: Path, err: BaseException) -> Exception:
    """Our error for a failure to read `path`: a category and numbers, no library text."""
    text = str(err).lower()
    kind = type(err).__name__
    if isinstance(err, EOFError | zlib.error | gzip.BadGzipFile) or "gzip" in text:
        return gzip_error(path, kind)
    if isinstance(err, OSError) and not isinstance(err, UnicodeError):
        return RawInputError(
            f"{path}: cannot be opened ({err.strerror or kind}): check that it exists and that "
            f"you may read it. {_NOT_REPLACED}"
        )
    if isinstance(err, UnicodeError) or "unicode" in text or "utf-8" in text or "utf8" in text:
        where = None
        try:
            where = first_invalid_utf8(path)
        except LIBRARY_ERRORS + (OSError,):
            pass  # a broken gzip as well: its own check reports it
        at = (
            f"at line {where[0]}, byte offset {where[1]}"
            + (" of the decompressed data" if path.suffix == ".gz" else "")
            if where
            else "somewhere in the file"
        )
        return RawInputError(
            f"{path}: not valid UTF-8 {at} (the line is withheld: it may hold patient data). "
            "MIMIC files are UTF-8: if the file's checksum differs from PhysioNet's "
            "SHA256SUMS.txt, download it again; if it was re-encoded or edited, convert it "
            f"back to UTF-8 (iconv -f <its encoding> -t utf-8). {_NOT_REPLACED}"
        )
    line = _line(str(err))
    near = f" near line {line}" if line is not None else ""
    if "maximum line size" in text:
        problem = f"a line{near} is longer than 16 MiB"
    elif "quote" in text:
        problem = f"a quoted field{near} is never closed"
    elif "columns" in text:
        problem = f"a row{near} has a different number of fields than the header"
    else:
        problem = f"{kind}{near}"
    return RawInputError(
        f"{path}: cannot be read as CSV: {problem} (the row is withheld: it may hold patient "
        "data). The file is probably truncated or edited: compare it with PhysioNet's "
        f"SHA256SUMS.txt (sha256sum -c) and download it again. {_NOT_REPLACED}"
    )


def statement_error(what: str, err: BaseException) -> RuntimeError:
    """A statement over our own tables failed: SQL mistakes (binder, parser, catalog) are
    shown, since they quote SQL, never data; any other error's text is withheld."""
    kind = type(err).__name__
    if isinstance(err, _SQL_MISTAKES):
        return RuntimeError(f"{what}: {kind}: {str(err).splitlines()[0]}")
    return RuntimeError(
        f"{what}: DuckDB failed ({kind}; details withheld: they may quote row values). "
        "Rebuild the upstream assets; if it persists, report it."
    )


def guarded(
    fn: Callable[[], T], source: Path | None = None, out: Path | None = None, what: str = ""
) -> T:
    """`fn()`, with a DuckDB / pyarrow / decoding error turned into ours (see module doc).

    `source`: the raw file being read; `out`: the output being written (a failed write
    names its folder); `what`: the statement, for errors over our own tables."""
    try:
        return fn()
    except LIBRARY_ERRORS + (OSError,) as err:
        if isinstance(err, _SQL_MISTAKES):  # our SQL, not the file: say so
            problem: Exception = statement_error(what or str(source), err)
        elif out is not None and _write_failed(err):
            problem = folder_error(out.parent, type(err).__name__)
        elif source is not None:
            problem = read_error(source, err)
        elif isinstance(err, OSError):
            raise  # ours, and a plain OS error (a missing file) carries no row content
        else:
            problem = statement_error(what, err)
    raise problem from None  # outside the except block: no cause, no context
