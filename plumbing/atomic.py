"""Atomic file writes: write a temp file in the target's folder, then `os.replace` it.

A reader never sees a half-written file: either the old version or the new one. A
killed writer leaves at most a `.tmp-*` file behind, which no reader trusts (readers
glob `*.parquet` / `*.json`, and temp names end in `.tmp`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["atomic_path", "write_bytes_atomic", "write_json_atomic", "write_parquet_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_parquet_atomic(data: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a pyarrow Table or pandas DataFrame to `path` atomically. Returns `path`."""
    if not isinstance(data, pa.Table):
        data = pa.Table.from_pandas(data, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(data, tmp, **kwargs)
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write `obj` as JSON (indent 2, sorted keys unless overridden) atomically."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, **kwargs) + "\n", encoding="utf-8")
    return Path(path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
