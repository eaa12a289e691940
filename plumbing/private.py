"""Owner-only files: what the project writes holds patient data (staged note text, caches,
models), so every file it creates is 0600 and every folder 0700, whatever the umask the
shell had and whichever library writes (Python, DuckDB, pyarrow, torch, matplotlib).

Two layers:
- `private_umask()` tightens the process umask to at least 0o077. It is process-wide and
  inherited by child processes, so DuckDB's COPY outputs and spill files, torch.save,
  pyarrow and Dagster's compute logs written after it are owner-only as they are created.
  It is set when the code location loads, when a run resolves its paths, and by every
  atomic write (plumbing/atomic.py).
- `make_private_tree()` takes group/other bits off what already exists (written by an
  earlier version, or before the umask was set): over the data folder and over Dagster's
  storage under DAGSTER_HOME, once per folder (`plumbing.data_dir.make_private_once`
  records the walk in the folder; later processes fix only the folder's own entries).

Only files and folders the current user owns are changed; symlinks are never followed.
No Dagster import (moe/, sql/ and synthetic/ reach this through plumbing.atomic).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "make_private", "make_private_tree", "private_umask"]

PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make the process umask deny group and other (keeping any stricter owner bits).
    Returns the umask that was in force before."""
    before = os.umask(PRIVATE_UMASK)
    os.umask(before | PRIVATE_UMASK)
    return before


def make_private(path: str | os.PathLike[str]) -> bool:
    """Take the group/other bits off one file or folder we own. True when it changed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & PRIVATE_UMASK:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode & ~PRIVATE_UMASK)
        return True
    return False


def make_private_tree(
    root: str | os.PathLike[str], include_root: bool = False, depth: int | None = None
) -> int:
    """`make_private` on everything below `root` (`depth` 1: its own entries only; and
    `root` itself if `include_root`). Returns how many entries changed. A missing root is
    nothing to do."""
    base = Path(root)
    if not base.is_dir():
        return 0
    changed = int(make_private(base)) if include_root else 0
    for folder, dirs, files in os.walk(base, followlinks=False):
        for name in (*dirs, *files):
            changed += make_private(os.path.join(folder, name))
        if depth == 1:
            break
    return changed
