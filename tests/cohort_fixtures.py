"""Tiny hand-built raw MIMIC layouts for the cohort and staging tests (no conftest).

Every subject is one scenario of docs/cohort-spec.md; times are offsets from a base stay:
admission at BASE, ICU intime 2 h later, t0 = intime + 48 h.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from plumbing.raw_layout import RAW_TABLES
from sql import (
    STAGED_NAMES,
    StagingParams,
    build_cohort,
    build_cohort_cxr,
    build_cohort_notes,
    build_ehr_features,
    build_staged,
)

SETTINGS = {"memory_limit": "512MB", "threads": 1, "temp_directory": "/tmp/moe_cohort_tests_tmp"}
BASE = datetime(2150, 1, 1, 8, 0, 0)
INTIME = BASE + timedelta(hours=2)
T0 = INTIME + timedelta(hours=48)
H = timedelta(hours=1)
S = timedelta(seconds=1)
D = timedelta(days=1)

COLUMNS = {
    "patients": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "admissions": [
        "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
        "race", "hospital_expire_flag",
    ],
    "icustays": [
        "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime",
        "outtime", "los",
    ],
    "chartevents": [
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid",
        "value", "valuenum", "valueuom", "warning",
    ],
    "labevents": [
        "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
        "charttime", "storetime", "value", "valuenum", "valueuom",
    ],
    "discharge": [
        "note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime",
        "text",
    ],
    "radiology": [
        "note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime",
        "text",
    ],
    "cxr_metadata": [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
        "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
    ],
}  # fmt: skip


def ts(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def study_date_time(t: datetime) -> tuple[str, str]:
    """MIMIC-CXR style: StudyDate YYYYMMDD, StudyTime HHMMSS.f without leading zeros."""
    number = t.hour * 10000 + t.minute * 100 + t.second + t.microsecond / 1e6
    return t.strftime("%Y%m%d"), repr(float(number))


class RawBuilder:
    """Collects rows per raw table and writes them in the PhysioNet layout."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
        self.jpgs: list[tuple[int, int, str]] = []
        self._next = 1

    def _id(self) -> int:
        self._next += 1
        return self._next

    def patient(self, subject: int, age: int = 60, anchor_year: int = 2150, gender: str = "F"):
        self.rows["patients"].append(
            {"subject_id": subject, "gender": gender, "anchor_age": age,
             "anchor_year": anchor_year, "anchor_year_group": "2017 - 2019", "dod": ""}
        )  # fmt: skip

    def admission(
        self,
        subject: int,
        hadm: int,
        admit: datetime = BASE,
        disch: datetime | None = None,
        death: datetime | None = None,
        expire: int = 0,
    ) -> None:
        self.rows["admissions"].append(
            {"subject_id": subject, "hadm_id": hadm, "admittime": ts(admit),
             "dischtime": ts(disch or admit + 10 * D), "deathtime": ts(death),
             "admission_type": "URGENT", "race": "WHITE", "hospital_expire_flag": expire}
        )  # fmt: skip

    def stay(
        self,
        subject: int,
        hadm: int,
        stay: int,
        intime: datetime = INTIME,
        outtime: datetime | None = None,
    ) -> None:
        out = outtime or intime + 5 * D
        self.rows["icustays"].append(
            {"subject_id": subject, "hadm_id": hadm, "stay_id": stay, "first_careunit": "MICU",
             "last_careunit": "MICU", "intime": ts(intime), "outtime": ts(out),
             "los": (out - intime).total_seconds() / 86400}
        )  # fmt: skip

    def subject(self, subject: int, **stay_kw: Any) -> tuple[int, int]:
        """A standard adult patient with one admission and one ICU stay; returns (hadm, stay)."""
        hadm, stay = 20000000 + subject % 1000000, 30000000 + subject % 1000000
        self.patient(subject)
        self.admission(subject, hadm)
        self.stay(subject, hadm, stay, **stay_kw)
        return hadm, stay

    def chart(self, subject: int, stay: int, itemid: int, t: datetime, value: Any) -> None:
        self.rows["chartevents"].append(
            {"subject_id": subject, "hadm_id": "", "stay_id": stay, "caregiver_id": 1,
             "charttime": t if isinstance(t, str) else ts(t), "storetime": "", "itemid": itemid,
             "value": value, "valuenum": value, "valueuom": "", "warning": 0}
        )  # fmt: skip

    def lab(self, subject: int, itemid: int, t: datetime, value: Any, hadm: Any = "") -> None:
        self.rows["labevents"].append(
            {"labevent_id": self._id(), "subject_id": subject, "hadm_id": hadm,
             "specimen_id": 1, "itemid": itemid, "order_provider_id": "", "charttime": ts(t),
             "storetime": "", "value": value, "valuenum": value, "valueuom": ""}
        )  # fmt: skip

    def note(
        self,
        table: str,
        note_id: str,
        subject: int,
        hadm: Any,
        note_type: str,
        chart: datetime,
        store: datetime | None = None,
    ) -> None:
        self.rows[table].append(
            {"note_id": note_id, "subject_id": subject, "hadm_id": hadm, "note_type": note_type,
             "note_seq": 1, "charttime": ts(chart), "storetime": ts(store),
             "text": 'Findings: "quoted", commas,\nand a new line.'}
        )  # fmt: skip

    def image(
        self,
        dicom: str,
        subject: int,
        study: int,
        t: datetime,
        view: str = "AP",
        jpg: bool = True,
        study_time: str | None = None,
    ) -> None:
        date, time = study_date_time(t)
        self.rows["cxr_metadata"].append(
            {"dicom_id": dicom, "subject_id": subject, "study_id": study,
             "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)", "ViewPosition": view,
             "Rows": 3056, "Columns": 2544, "StudyDate": date, "StudyTime": study_time or time}
        )  # fmt: skip
        if jpg:
            self.jpgs.append((subject, study, dicom))

    def write(self, root: Path, gz: Sequence[str] = ("patients", "labevents")) -> Path:
        """Write every table (gzip for those in `gz`, plain CSV otherwise) and the JPGs."""
        for name, rows in self.rows.items():
            table = RAW_TABLES[name]
            suffix = ".csv.gz" if name in gz else ".csv"
            write_csv(root / table.module / f"{table.stem}{suffix}", COLUMNS[name], rows)
        for subject, study, dicom in self.jpgs:
            p = root / "cxr" / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
            p.mkdir(parents=True, exist_ok=True)
            (p / f"{dicom}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
        return root


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:  # type: ignore[operator]
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


# for tests that count dropped rows on tiny tables, where any drop is a large share
ACCEPT_DROPS = StagingParams(max_rejected_fraction=1.0)


def build_all(
    raw: Path, data: Path, staging: StagingParams | None = None, **cohort_kw: Any
) -> dict[str, Any]:
    """Run every builder in order; returns {asset name: BuildResult}."""
    results: dict[str, Any] = {}
    for name in STAGED_NAMES:
        results[f"staged_{name}"] = build_staged(name, raw, data, SETTINGS, params=staging)
    results["cohort"] = build_cohort(raw, data, SETTINGS, **cohort_kw)
    results["ehr_features"] = build_ehr_features(data, SETTINGS)
    results["cohort_notes"] = build_cohort_notes(data, SETTINGS)
    results["cohort_cxr"] = build_cohort_cxr(raw, data, SETTINGS)
    return results
