"""Fault injection, as a table that grows: each row is a *class* of bad input or misuse,
applied to the raw files (or the settings) of a small fixture whose data folder already
holds a good cohort (tests/fault_fixture.py: 6 subjects, a canary in every note).

Every class must end in one of two ways, as Dagster runs it (`materialize`, in-process):
- "error": the run fails; the error names the file (or both files / both sources) and
  the real fix, and every file in the data folder is byte-identical to before; or
- "clean": the run succeeds; every output holds exactly what the clean run holds, and
  the rows dropped are counted in the metadata and said at WARNING.
In both, the canary (note text) appears in no error (whole chain), log line or event.

To add a class: write a `mutate(raw) -> Mutation` and a row in `CLASSES`. Keep the table
bounded (`MAX_CLASSES`) and each mutation small: the whole table runs in the default suite
(about 20-40 s on 2 shared cores).
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.fault_fixture import (
    CANARY,
    NO_ICU_SUBJECT,
    SUBJECTS,
    build_raw,
    everything_said,
    failure_text,
    log_lines,
    run_extraction,
    snapshot,
)
from tests.reliability_helpers import read_table

MAX_CLASSES = 12
OUTPUTS = [
    "staged_patients", "staged_admissions", "staged_icustays", "staged_chartevents",
    "staged_labevents", "staged_discharge", "staged_radiology", "staged_cxr_metadata",
    "cohort", "ehr_features", "cohort_notes", "cohort_cxr",
]  # fmt: skip
KEYS = ["stay_id", "note_id", "dicom_id", "labevent_id", "subject_id", "hadm_id", "charttime"]


@dataclass
class Mutation:
    """What a class did: the file(s) an error must name, the table whose drop is counted."""

    names: list[str]
    table: str | None = None  # staged_<table> whose metadata counts the dropped rows
    dropped: int = 0
    unset_source: bool = False
    # order-dependent resolution is what this class guards against: a "clean" outcome must
    # also hold with the offending row moved (raw, row index) -> see _conflict_reordered
    reorder: Callable[[Path], None] | None = None
    run_config: dict[str, Any] | None = None  # e.g. a threshold raised by the user


@dataclass(frozen=True)
class FaultClass:
    name: str
    mutate: Callable[[Path], Mutation]
    outcomes: frozenset[str]  # the acceptable ones: "error" and/or "clean"
    says: tuple[str, ...] = ()  # an error must name the cause (case-insensitive) ...
    not_says: tuple[str, ...] = ()  # ... and not send the user the wrong way


# ------------------------------------------------------------------ raw-file edits


def _lines(path: Path) -> list[bytes]:
    blob = path.read_bytes()
    if path.suffix == ".gz":
        blob = gzip.decompress(blob)
    return blob.splitlines(keepends=True)


def _eol(lines: list[bytes]) -> bytes:
    return b"\r\n" if lines[0].endswith(b"\r\n") else b"\n"


def _write_lines(path: Path, lines: list[bytes]) -> None:
    blob = b"".join(lines)
    path.write_bytes(gzip.compress(blob, mtime=0) if path.suffix == ".gz" else blob)


def truncate(raw: Path) -> Mutation:
    path = raw / "hosp" / "patients.csv.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 25])  # an interrupted download
    return Mutation([str(path)])


def drop_column(raw: Path) -> Mutation:
    path = raw / "icu" / "icustays.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.drop(columns=["intime"]).to_csv(path, index=False)
    return Mutation([str(path)])


def garbage_in_a_typed_column(raw: Path) -> Mutation:
    """One extra chart row whose charttime does not parse (1 of 181 rows: under 1 %)."""
    path = raw / "icu" / "chartevents.csv"
    lines = _lines(path)
    fields = lines[1].decode().rstrip("\r\n").split(",")
    header = lines[0].decode().rstrip("\r\n").split(",")
    fields[header.index("charttime")] = "2150-13-45 99:00:00"
    _write_lines(path, [*lines, ",".join(fields).encode() + _eol(lines)])
    return Mutation([str(path)], table="staged_chartevents", dropped=1)


def _conflicting_stays(raw: Path, swapped: bool) -> Path:
    """Two ICU stays with one stay_id and different outtimes (5 and 9 days) for the subject
    that has an admission but no ICU stay: either row alone would add a stay to the cohort,
    so any rule that keeps one by row order changes it; clean means both are refused."""
    path = raw / "icu" / "icustays.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    first = df.iloc[[0]].copy()
    first["subject_id"], first["hadm_id"], first["stay_id"] = (
        str(NO_ICU_SUBJECT), str(20000000 + NO_ICU_SUBJECT % 1000000), "39999999"
    )
    second = first.copy()
    second["outtime"], second["los"] = "2150-01-10 10:00:00", "9.0"
    pair = [second, first] if swapped else [first, second]
    pd.concat([df, *pair], ignore_index=True).to_csv(path, index=False)
    return path


def conflicting_duplicate_keys(raw: Path) -> Mutation:
    path = _conflicting_stays(raw, swapped=False)

    def reorder(r: Path) -> None:
        _conflicting_stays(r, swapped=True)

    return Mutation([str(path)], table="staged_icustays", dropped=2, reorder=reorder)


def conflicting_duplicate_keys_accepted(raw: Path) -> Mutation:
    """The same pair with the user's rejection threshold raised above the 2 of 8 rows: the
    rule itself decides, and must not depend on which row comes first."""
    m = conflicting_duplicate_keys(raw)
    cfg = {"staged_icustays": {"config": {"max_rejected_fraction": 0.5}}}
    m.run_config = {"ops": cfg}
    return m


def encoding_damage(raw: Path) -> Mutation:
    """An extra last note whose text holds bytes that are not UTF-8 (the issue's case)."""
    path = raw / "note" / "radiology.csv.gz"
    lines = _lines(path)
    bad = (
        f'rr_bad,{SUBJECTS[0]},,RR,1,2150-01-01 11:00:00,,"{CANARY} broken \xff\xfe here"'
    ).encode("latin-1") + _eol(lines)
    _write_lines(path, [*lines, bad])
    return Mutation([str(path)], table="staged_radiology", dropped=1)


def second_candidate_file(raw: Path) -> Mutation:
    """`patients.csv` beside `patients.csv.gz`, with different content."""
    gz = raw / "hosp" / "patients.csv.gz"
    plain = raw / "hosp" / "patients.csv"
    df = pd.read_csv(gz, dtype=str, keep_default_na=False)
    df.loc[0, "gender"] = "M" if df.loc[0, "gender"] == "F" else "F"
    df.to_csv(plain, index=False)
    return Mutation([str(gz.parent), gz.name, plain.name])  # the folder and both names


def unset_source(raw: Path) -> Mutation:
    """A new shell without `export MOE_MIMIC_ROOT`: the run would be the demo profile."""
    return Mutation([f"MOE_MIMIC_ROOT={raw.resolve()}", "the synthetic demo data"], unset_source=True)


ERROR, CLEAN, EITHER = frozenset({"error"}), frozenset({"clean"}), frozenset({"error", "clean"})
CLASSES = [
    FaultClass("truncate", truncate, ERROR, says=("gzip",)),
    FaultClass("drop_column", drop_column, ERROR, says=("intime",)),
    FaultClass("garbage_in_a_typed_column", garbage_in_a_typed_column, CLEAN),
    FaultClass("conflicting_duplicate_keys", conflicting_duplicate_keys, EITHER),
    FaultClass(
        "conflicting_duplicate_keys_accepted", conflicting_duplicate_keys_accepted, CLEAN
    ),
    FaultClass(
        "encoding_damage", encoding_damage, EITHER, says=("utf-8",), not_says=("gzip -t",)
    ),
    FaultClass("second_candidate_file", second_candidate_file, ERROR),
    FaultClass("unset_source", unset_source, ERROR, says=("python -m plumbing.reset",)),
]
# Classes whose fix has not landed yet: strict xfail (an unexpected pass fails the suite,
# so the mark goes the day the fix lands). name -> reason
PENDING: dict[str, str] = {}


def test_the_table_stays_bounded() -> None:
    assert len(CLASSES) <= MAX_CLASSES
    assert len({c.name for c in CLASSES}) == len(CLASSES)


# ------------------------------------------------------------------ the clean run


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("faults")
    pristine = build_raw(base / "pristine")
    raw = base / "raw"  # every class runs on this same path: unchanged files are reused
    shutil.copytree(pristine, raw)
    data = base / "clean"
    result, _ = run_extraction(data, raw)
    assert result.success, failure_text(result)
    return {"pristine": pristine, "raw": raw, "data": data, "outputs": _outputs(data)}


def _outputs(data: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in OUTPUTS:
        df = read_table(data / f"{name}.parquet")
        key = [k for k in KEYS if k in df.columns]
        out[name] = df.sort_values(key).reset_index(drop=True) if key else df
    return out


def _fresh(clean: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    raw = clean["raw"]
    shutil.rmtree(raw)
    shutil.copytree(clean["pristine"], raw)  # copy2: same names, sizes, mtimes
    data = tmp_path / "data"
    shutil.copytree(clean["data"], data)
    return raw, data


def _dropped(result: Any, table: str) -> int:
    mats = result.asset_materializations_for_node(table)
    assert mats, f"{table} was not materialized"
    value = mats[0].metadata["rows_dropped"]
    return int(getattr(value, "value", value))


# ------------------------------------------------------------------ the table


def _params() -> list[Any]:
    return [
        pytest.param(
            c,
            id=c.name,
            marks=[pytest.mark.xfail(strict=True, reason=PENDING[c.name])]
            if c.name in PENDING
            else [],
        )
        for c in CLASSES
    ]


@pytest.mark.parametrize("fault", _params())
def test_fault_class(fault: FaultClass, clean: dict[str, Any], tmp_path: Path) -> None:
    raw, data = _fresh(clean, tmp_path)
    before = snapshot(data)
    m = fault.mutate(raw)
    result, instance = run_extraction(data, None if m.unset_source else raw, run_config=m.run_config)
    said = everything_said(instance, result)
    assert CANARY not in said, "note text in a log line, an event or an error"
    assert CANARY not in failure_text(result)
    if not result.success:
        assert "error" in fault.outcomes, f"{fault.name} must not fail the run"
        msg = failure_text(result)
        for name in m.names:
            assert name in msg, f"the error does not name {name}:\n{msg[-3000:]}"
        for words in fault.says:
            assert words.lower() in msg.lower(), f"the error does not say {words!r}:\n{msg[-3000:]}"
        for words in fault.not_says:
            assert words not in msg, f"the error says {words!r}: the wrong way\n{msg[-3000:]}"
        assert snapshot(data) == before, "a failed run changed the data folder"
        return
    assert "clean" in fault.outcomes, f"{fault.name} must fail the run, it succeeded"
    got = _outputs(data)
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(got[name], clean["outputs"][name], obj=name)
    assert m.table is not None
    assert _dropped(result, m.table) == m.dropped
    stem = m.table.removeprefix("staged_")
    warned = [
        msg
        for level, msg in log_lines(instance, result)
        if level >= 30 and stem in msg and re.search(rf"\b{m.dropped}\b", msg)
    ]
    assert warned, f"no WARNING counting the {m.dropped} dropped row(s) of {m.table}"
    if m.reorder is not None:  # the same result whichever row comes first
        raw, data = _fresh(clean, tmp_path / "reordered")
        m.reorder(raw)
        again, _ = run_extraction(data, raw, run_config=m.run_config)
        assert again.success, failure_text(again)
        for name, df in _outputs(data).items():
            pd.testing.assert_frame_equal(df, got[name], obj=f"{name} (row order swapped)")
