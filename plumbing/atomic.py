"""Atomic file writes: write a temp file in the target's folder, then `os.replace` it.

A reader never sees a half-written file: either the old version or the new one. Temp
names are `.<name>.<host>_<pid>_<random>.tmp` (`temp_path`): hidden, ending in `.tmp`,
so no reader trusts them (readers glob `*.parquet` / `*.json`), and naming the process
that writes them. A writer killed with SIGKILL leaves its temp behind (for the staged note
tables it holds note text); `remove_dead_temps` deletes the temps whose writer process is
gone, and only those: a live run's temps on this host, and every temp written on another
host (a pid means nothing there), are left alone. Every write is owner-only
(plumbing/private.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plumbing.private import make_private, private_umask

__all__ = [
    "TEMP_PATTERN",
    "atomic_dir",
    "atomic_path",
    "commit_temp",
    "dead_temps",
    "process_temp_dir",
    "remove_dead_temps",
    "temp_path",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]

HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:48] or "host"
TEMP_PATTERN = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)_(?P<pid>\d+)_(?P<rand>[0-9a-f]{8})\.tmp$"
)


def temp_path(target: str | os.PathLike[str]) -> Path:
    """A fresh temp name beside `target` naming this host and process (not created).
    Also sets the owner-only umask, so whatever library then writes it writes it 0600."""
    private_umask()
    t = Path(target)
    return t.with_name(f".{t.name}.{HOST}_{os.getpid()}_{secrets.token_hex(4)}.tmp")


def commit_temp(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Make `tmp` owner-only (a library may have re-created it) and rename it onto `target`."""
    make_private(tmp)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed."""
    private_umask()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        yield tmp
        commit_temp(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; on success it takes the place of `path`
    (an old folder there is moved aside under a temp name, then removed), on error it is
    removed. A killed writer leaves a temp folder that `remove_dead_temps` deletes."""
    private_umask()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    tmp.mkdir(mode=0o700)
    try:
        yield tmp
        old = temp_path(target) if target.exists() else None
        if old is not None:
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet_atomic(data: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a pyarrow Table or pandas DataFrame to `path` atomically. Returns `path`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(data, pa.Table):
        data = pa.Table.from_pandas(data, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(data, tmp, **kwargs)
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write `obj` as JSON (indent 2, sorted keys unless overridden) atomically."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    return write_text_atomic(json.dumps(obj, **kwargs) + "\n", path)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write `text` as UTF-8 atomically."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


_process_dirs: dict[tuple[int, str], Path] = {}


def process_temp_dir(base: str | os.PathLike[str]) -> Path:
    """This process's own owner-only folder under `base` (named like a temp file, created
    once per process): where DuckDB spills. A killed process's folder, which may hold
    spilled note text, is removed by the next one to ask for a folder under `base`."""
    root = Path(base)
    key = (os.getpid(), str(root))
    if key not in _process_dirs:
        private_umask()
        root.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(root, depth=1)  # only the folder's own entries: it may be big
        folder = temp_path(root / "duckdb")
        folder.mkdir(mode=0o700)
        _process_dirs[key] = folder
    return _process_dirs[key]


# --------------------------------------------------------------------- dead-run leftovers


def process_exists(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def dead_temps(root: str | os.PathLike[str], depth: int | None = None) -> list[Path]:
    """Temp files and folders under `root` (symlinks not followed; `depth` 1: its own
    entries only) written on this host by a process that no longer exists. A reused pid
    keeps its temps: removal errs on the safe side."""
    base = Path(root)
    found: list[Path] = []
    if not base.is_dir():
        return found
    for folder, dirs, files in os.walk(base, followlinks=False):
        for name in (*dirs, *files):
            m = TEMP_PATTERN.match(name)
            if m and m["host"] == HOST and not process_exists(int(m["pid"])):
                found.append(Path(folder, name))
        dirs[:] = [d for d in dirs if not TEMP_PATTERN.match(d)]  # removed whole, not entered
        if depth == 1:
            break
    return sorted(found)


def remove_dead_temps(root: str | os.PathLike[str], depth: int | None = None) -> list[Path]:
    """Delete what `dead_temps` finds; returns the paths removed."""
    removed = []
    for path in dead_temps(root, depth):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
