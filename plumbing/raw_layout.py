"""The PhysioNet layout the pipeline reads, and a cheap fingerprint of it.

The fingerprint (file names, sizes, modification times; no contents) is what the refresh
sensor compares and what `mimic_raw` reports as its data version, so a new MIMIC release or
an added `cxr/files/pNN` folder is noticed without reading the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# module -> (required?, tables, where to get it)
MODULES: dict[str, tuple[bool, tuple[str, ...], str]] = {
    "hosp": (
        True,
        ("patients", "admissions", "labevents"),
        "MIMIC-IV (https://physionet.org/content/mimiciv/), folder hosp/",
    ),
    "icu": (
        True,
        ("icustays", "chartevents"),
        "MIMIC-IV (https://physionet.org/content/mimiciv/), folder icu/",
    ),
    "note": (
        False,
        ("discharge", "radiology"),
        "MIMIC-IV-Note (https://physionet.org/content/mimic-iv-note/), folder note/",
    ),
    "cxr": (
        False,
        ("mimic-cxr-2.0.0-metadata",),
        "MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/), files at cxr/",
    ),
}


class RawLayoutError(RuntimeError):
    """The raw root is not a PhysioNet layout the pipeline can read."""


def table_file(root: Path, module: str, table: str) -> Path | None:
    """`<root>/<module>/<table>.csv.gz`, or the plain `.csv`; None when neither exists."""
    for suffix in (".csv.gz", ".csv"):
        path = root / module / f"{table}{suffix}"
        if path.is_file():
            return path
    return None


@dataclass
class LayoutReport:
    root: Path
    present_modules: list[str] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)
    cxr_folders: list[str] = field(default_factory=list)


def check_layout(root: Path) -> LayoutReport:
    """Fail early, naming the file and where to download it; note optional gaps."""
    if not root.is_dir():
        raise RawLayoutError(
            f"MOE_MIMIC_ROOT={root} is not a folder. Point it at the folder that holds hosp/ "
            "and icu/ (and optionally note/ and cxr/), or unset it to run on demo data."
        )
    report = LayoutReport(root=root)
    for module, (required, tables, source) in MODULES.items():
        missing = [t for t in tables if table_file(root, module, t) is None]
        if not missing:
            report.present_modules.append(module)
        elif required:
            names = ", ".join(f"{module}/{t}.csv.gz" for t in missing)
            raise RawLayoutError(
                f"{root}: required file(s) missing: {names}. Download them from {source} "
                "and keep PhysioNet's folder layout."
            )
        else:
            report.missing_optional.append(module)
    files = root / "cxr" / "files"
    if files.is_dir():
        report.cxr_folders = sorted(
            e.name for e in os.scandir(files) if e.is_dir() and e.name.startswith("p")
        )
    return report


def fingerprint(root: Path) -> str:
    """Hash of table files' names, sizes and mtimes plus the list of CXR folders' stats.

    Reads no file contents and does not walk the 377k JPGs: a pNN folder's mtime changes
    when a study folder is added to it.
    """
    entries: list[tuple[str, int, int]] = []
    for module in MODULES:
        folder = root / module
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith((".csv", ".csv.gz")):
                st = entry.stat()
                entries.append((f"{module}/{entry.name}", st.st_size, st.st_mtime_ns))
    files = root / "cxr" / "files"
    if files.is_dir():
        for entry in sorted(os.scandir(files), key=lambda e: e.name):
            if entry.is_dir():
                st = entry.stat()
                entries.append((f"cxr/files/{entry.name}", 0, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
