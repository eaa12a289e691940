"""Opening the data folder for a run (`ProjectResource.paths()` calls `open_data_dir`):

1. the process umask becomes owner-only, and a folder the project creates is 0700;
2. the folder's source record (`source.json`: the demo, or which MOE_MIMIC_ROOT) is
   checked: a run from another source refuses to touch the folder (`SourceMismatchError`,
   naming both sources and the way out); a new folder records the run's source;
3. once per process: group/other bits come off what is already in the folder
   (`make_private_once`: everything the first time this version opens the folder, recorded
   in `.owner_only`; later only the folder's own entries, since what our processes write
   is owner-only already: umask, atomic writes), and the temp files of atomic writes
   whose writer process died are removed (plumbing/atomic.py).

`python -m plumbing.reset` re-records the source on purpose (plumbing/reset.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from plumbing.atomic import remove_dead_temps, temp_path, write_json_atomic, write_text_atomic
from plumbing.private import make_private_tree, private_umask
from plumbing.settings import ProjectPaths, ensure_private_dir

__all__ = [
    "OWNER_ONLY_STAMP",
    "OWNER_ONLY_VERSION",
    "SOURCE_FILE",
    "SourceMismatchError",
    "check_source",
    "describe_source",
    "make_private_once",
    "open_data_dir",
    "read_source",
    "record_source",
    "source_of",
]

SOURCE_FILE = "source.json"
# The stamp of a folder walked by `make_private_once`. Raise the version when the walk
# fixes more than before: every folder stamped with an older one is walked again.
OWNER_ONLY_STAMP = ".owner_only"
OWNER_ONLY_VERSION = 1
log = logging.getLogger(__name__)
_opened: set[tuple[int, str]] = set()


class SourceMismatchError(RuntimeError):
    """The data folder was built from another source than the one this run reads."""


def source_of(paths: ProjectPaths) -> dict[str, str]:
    if paths.mimic_root is None:
        return {"source": "demo"}
    return {"source": "mimic", "root": str(paths.mimic_root)}


def describe_source(record: dict[str, Any]) -> str:
    if record.get("source") == "demo":
        return "the synthetic demo data (MOE_MIMIC_ROOT unset or empty)"
    if record.get("source") == "mimic" and record.get("root"):
        return f"MOE_MIMIC_ROOT={record.get('root')}"
    return str(record.get("description", "an unrecorded source"))


def read_source(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / SOURCE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SourceMismatchError(
            f"{path} cannot be read ({type(err).__name__}): it records which source "
            f"{data_dir} was built from. Restore it, or run `python -m plumbing.reset` to "
            "record the current source."
        ) from None
    return record if isinstance(record, dict) else {}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("source"), a.get("root")) == (b.get("source"), b.get("root"))


def _has_outputs(data_dir: Path) -> bool:
    return (data_dir / "cohort.parquet").is_file() or any(data_dir.glob("staged_*.parquet"))


def _legacy_source(paths: ProjectPaths) -> dict[str, Any] | None:
    """What a folder built before source records existed was built from, where it shows:
    outputs without a generated demo root were built from some MOE_MIMIC_ROOT."""
    if not _has_outputs(paths.data_dir):
        return None
    if ProjectPaths(paths.data_dir, None).raw_root.is_dir():
        return None  # the demo ran here (perhaps a real root too): cannot tell, adopt
    return {
        "source": "mimic",
        "root": None,
        "description": "a MOE_MIMIC_ROOT that was not recorded (the folder holds staged "
        "tables but no generated demo data)",
    }


def record_source(data_dir: Path, record: dict[str, Any]) -> None:
    """Write the record (replacing any): `python -m plumbing.reset` and new folders."""
    write_json_atomic(record, data_dir / SOURCE_FILE)


def _create_record(data_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write the record unless one exists (two first runs at once: one wins); returns the
    record now in place."""
    target = data_dir / SOURCE_FILE
    tmp = temp_path(target)
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    try:
        os.link(tmp, target)  # fails if a record appeared meanwhile
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: the small race is acceptable
        if not target.exists():
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return read_source(data_dir) or record


def check_source(paths: ProjectPaths) -> dict[str, Any]:
    """The folder's source record, created for a new folder; SourceMismatchError when the
    folder was built from another source than `paths` reads."""
    wanted = source_of(paths)
    record = read_source(paths.data_dir)
    if record is None:
        legacy = _legacy_source(paths)
        if legacy is not None and wanted["source"] == "demo":
            raise SourceMismatchError(mismatch_message(paths.data_dir, legacy, wanted))
        # new, or built by an earlier version: adopt (a real root cannot be told from
        # another one; replacing demo outputs with real ones loses nothing)
        record = _create_record(paths.data_dir, wanted)
    if not _same(record, wanted):
        raise SourceMismatchError(mismatch_message(paths.data_dir, record, wanted))
    return record


def mismatch_message(data_dir: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    old, new = describe_source(recorded), describe_source(wanted)
    back = (
        f" set MOE_MIMIC_ROOT={recorded['root']} again (a new shell without the export?),"
        if recorded.get("source") == "mimic" and recorded.get("root")
        else ""
    )
    return (
        f"{data_dir} was built from {old}, but this run reads {new}. Nothing was touched: "
        f"running on would replace its staged tables and cohort with data from another "
        f"source. Either{back} point MOE_DATA_DIR at another folder for {new}, or, to "
        f"rebuild this folder from {new} (its outputs are then replaced), record the new "
        f"source with `python -m plumbing.reset` (same MOE_DATA_DIR and MOE_MIMIC_ROOT)."
    )


def _stamped(stamp: Path) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == str(OWNER_ONLY_VERSION)
    except (OSError, UnicodeDecodeError):
        return False


def make_private_once(root: Path) -> int:
    """Group/other bits off what `root` holds: everything the first time (then the walk is
    recorded in `root/.owner_only`), only `root`'s own entries when a process of this
    version walked it before (a file a shell or another program put there, e.g. a CLI
    log). Returns how many entries changed; a missing root is nothing to do."""
    if not root.is_dir():
        return 0
    stamp = root / OWNER_ONLY_STAMP
    if _stamped(stamp):
        return make_private_tree(root, depth=1)
    changed = make_private_tree(root)
    write_text_atomic(f"{OWNER_ONLY_VERSION}\n", stamp)
    return changed


def open_data_dir(paths: ProjectPaths) -> ProjectPaths:
    """Everything a run does to the data folder before it writes there; returns `paths`."""
    private_umask()
    ensure_private_dir(paths.data_dir)
    check_source(paths)
    key = (os.getpid(), str(paths.data_dir))
    if key not in _opened:
        _opened.add(key)
        make_private_once(paths.data_dir)
        removed = remove_dead_temps(paths.data_dir)
        if removed:
            log.warning(
                "Removed %d temp file(s) left under %s by runs whose process had died.",
                len(removed),
                paths.data_dir,
            )
    return paths


def private_at_load() -> None:
    """When the code location loads (every Dagster process that runs our code): owner-only
    umask, inherited by the run and step processes it starts, so compute logs and event
    logs are written 0600; and group/other bits off what is already in DAGSTER_HOME (the
    run storage and compute logs of earlier runs: walked once, `make_private_once`).
    Never stops the code from loading."""
    private_umask()
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return
    try:
        make_private_once(Path(home))
    except OSError as err:
        log.warning("could not make %s owner-only: %s", home, err)
