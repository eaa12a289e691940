"""The PhysioNet layout the pipeline reads: one registry of raw tables, the file of each,
and a cheap fingerprint of the whole root.

- `RAW_TABLES`: every raw file a staging statement reads (`sql/staging/<name>.sql`), with
  its module folder, file stem, the columns read and the PhysioNet project providing it.
- `raw_file()`: `<root>/<module>/<stem>.csv.gz` or `.csv`; two candidates for one table are
  an error naming both (never a silent choice).
- `check_layout()`: the root as a whole (what `mimic_raw` checks before anything runs).
- `fingerprint()`: file names, sizes, modification times (no contents): what the refresh
  sensor compares and what `mimic_raw` reports as its data version, so a new MIMIC release
  or an added `cxr/files/pNN` folder is noticed without reading the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MIMIC_IV = "MIMIC-IV v2.2+ (https://physionet.org/content/mimiciv/)"
MIMIC_NOTE = "MIMIC-IV-Note (https://physionet.org/content/mimic-iv-note/)"
MIMIC_CXR = "MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/)"
SUFFIXES = (".csv.gz", ".csv")


class RawInputError(RuntimeError):
    """A raw input file is missing, ambiguous, lacks a column, or cannot be read."""


class RawLayoutError(RawInputError):
    """The raw root as a whole is not a PhysioNet layout the pipeline can read."""


@dataclass(frozen=True)
class RawTable:
    """One raw PhysioNet file that a staging statement reads."""

    name: str  # staged table suffix: staged_<name>
    module: str  # hosp / icu / note / cxr
    stem: str  # file name without .csv(.gz)
    columns: tuple[str, ...]  # required (and the only ones read)
    source: str  # which PhysioNet project provides it
    optional: bool = False  # optional modules may be absent: empty table + warning
    key: tuple[str, ...] = ()  # columns that identify a row, where the cohort relies on it

    @property
    def relative(self) -> str:
        return f"{self.module}/{self.stem}.csv.gz"


_NOTE_COLUMNS = (
    "note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text",
)  # fmt: skip

RAW_TABLES: dict[str, RawTable] = {
    t.name: t
    for t in [
        RawTable(
            "patients", "hosp", "patients",
            ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
            MIMIC_IV, key=("subject_id",),
        ),
        RawTable(
            "admissions", "hosp", "admissions",
            ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
             "hospital_expire_flag"),
            MIMIC_IV, key=("hadm_id",),
        ),
        RawTable(
            "icustays", "icu", "icustays",
            ("subject_id", "hadm_id", "stay_id", "first_careunit", "intime", "outtime"),
            MIMIC_IV, key=("stay_id",),
        ),
        RawTable(
            "chartevents", "icu", "chartevents",
            ("subject_id", "hadm_id", "stay_id", "itemid", "charttime", "storetime", "valuenum",
             "valueuom"),
            MIMIC_IV,
        ),
        RawTable(
            "labevents", "hosp", "labevents",
            ("labevent_id", "subject_id", "hadm_id", "itemid", "charttime", "storetime",
             "valuenum", "valueuom"),
            MIMIC_IV,
        ),
        RawTable("discharge", "note", "discharge", _NOTE_COLUMNS, MIMIC_NOTE, optional=True,
                 key=("note_id",)),
        RawTable("radiology", "note", "radiology", _NOTE_COLUMNS, MIMIC_NOTE, optional=True,
                 key=("note_id",)),
        RawTable(
            "cxr_metadata", "cxr", "mimic-cxr-2.0.0-metadata",
            ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"),
            MIMIC_CXR, optional=True, key=("dicom_id",),
        ),
    ]
}  # fmt: skip

# module folder -> the tables in it, in registry order
MODULES: dict[str, list[RawTable]] = {}
for _t in RAW_TABLES.values():
    MODULES.setdefault(_t.module, []).append(_t)


def raw_file(root: Path, name: str) -> Path | None:
    """`<root>/<module>/<stem>.csv.gz`, or the plain `.csv`; None when neither exists.

    Two files that could be the table (`admissions.csv` beside `admissions.csv.gz`, or a
    name differing only in case) are refused, naming both: which one is the real download
    is the user's call, never a silent pick.
    """
    table = RAW_TABLES[name]
    folder = root / table.module
    if not folder.is_dir():
        return None
    wanted = {f"{table.stem}{s}".lower() for s in SUFFIXES}
    found = sorted(
        Path(e.path) for e in os.scandir(folder) if e.name.lower() in wanted and e.is_file()
    )
    if len(found) > 1:
        raise RawInputError(
            f"{len(found)} files could be {table.module}/{table.stem}.csv(.gz): "
            f"{' and '.join(str(p) for p in found)}. Keep one (move or delete the others) so "
            "that it is clear which one the pipeline reads."
        )
    exact = {folder / f"{table.stem}{s}" for s in SUFFIXES}
    if found and found[0] not in exact:
        raise RawInputError(
            f"{found[0]}: expected the name {table.stem}.csv.gz (or .csv), as PhysioNet "
            "spells it; rename the file."
        )
    return found[0] if found else None


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
    for module, tables in MODULES.items():
        missing = [t for t in tables if raw_file(root, t.name) is None]
        if not missing:
            report.present_modules.append(module)
        elif not tables[0].optional:
            names = ", ".join(t.relative for t in missing)
            raise RawLayoutError(
                f"{root}: required file(s) missing: {names}. Download them from "
                f"{tables[0].source}, folder {module}/, and keep PhysioNet's folder layout."
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
            if entry.is_file() and entry.name.endswith(SUFFIXES):
                st = entry.stat()
                entries.append((f"{module}/{entry.name}", st.st_size, st.st_mtime_ns))
    files = root / "cxr" / "files"
    if files.is_dir():
        for entry in sorted(os.scandir(files), key=lambda e: e.name):
            if entry.is_dir():
                st = entry.stat()
                entries.append((f"cxr/files/{entry.name}", 0, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
