"""Bad input and what the user sees: a clear error naming the file, the problem and the fix,
raised before any output is replaced; or, for row-level junk, rows dropped and counted.

Already covered elsewhere (not repeated here): required file missing and a column missing
(tests/test_staging.py, tests/test_project_setup.py), truncated / garbage .csv.gz
(tests/test_staging.py), outtime before intime and unparseable chart times
(tests/test_cohort_rules.py::test_row_level_junk_is_dropped_and_counted), absent JPGs
(tests/test_cohort_rules.py), JPGs truncated / zero bytes / 16-bit / RGB / tiny
(tests/test_embed_cxr.py, tests/test_embed_assets.py).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from assets.sources import mimic_raw
from plumbing.resources import ProjectResource
from sql import RawInputError, build_staged
from tests.cohort_fixtures import INTIME, SETTINGS, H, RawBuilder, build_all

CANARY = "CANARY-7f3a9c-PATIENT-TEXT"


def _builder() -> RawBuilder:
    b = RawBuilder()
    b.subject(10000001)
    b.subject(11000002)
    return b


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run was expected to fail"
    err = failures[0].event_specific_data.error
    text = ""
    while err is not None:  # the user's message may be the cause of Dagster's wrapper
        text += err.message + "\n"
        err = err.cause
    return text


# ------------------------------------------------------------------ MOE_MIMIC_ROOT


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_wrong_mimic_root_fails_mimic_raw_with_a_clear_message(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "mimic"
    if kind == "empty":
        root.mkdir()
    elif kind == "file":
        root.write_text("not a folder")
    result = materialize(
        [mimic_raw],
        resources={
            "project": ProjectResource(data_dir=str(tmp_path / "data"), mimic_root=str(root))
        },
        raise_on_error=False,
    )
    assert not result.success
    msg = _failure_message(result)
    assert str(root) in msg
    if kind == "empty":
        assert "hosp/patients.csv.gz" in msg and "physionet.org" in msg
    else:
        assert "is not a folder" in msg and "unset it" in msg


def test_empty_mimic_root_variable_means_demo_profile() -> None:
    from plumbing.settings import project_paths

    assert project_paths({"MOE_DATA_DIR": "/x", "MOE_MIMIC_ROOT": ""}).is_demo


# ------------------------------------------------------------------ whole-file problems


def test_renamed_column_names_file_expected_and_found_columns(tmp_path: Path) -> None:
    raw = _builder().write(tmp_path / "raw")
    path = raw / "icu" / "icustays.csv"
    df = pd.read_csv(path).rename(columns={"stay_id": "icustay_id"})
    df.to_csv(path, index=False)
    with pytest.raises(RawInputError) as err:
        build_staged("icustays", raw, tmp_path / "data", SETTINGS)
    msg = str(err.value)
    assert str(path) in msg and "lacks the column(s) stay_id" in msg and "icustay_id" in msg
    assert "download it again" in msg


@pytest.mark.parametrize("name", ["patients.csv", "patients.csv.gz"])
def test_zero_byte_file_is_clear_error_and_keeps_previous_output(tmp_path: Path, name: str) -> None:
    raw = _builder().write(tmp_path / "raw", gz=("patients",) if name.endswith(".gz") else ())
    data = tmp_path / "data"
    good = build_staged("patients", raw, data, SETTINGS)
    before = good.path.read_bytes()
    (raw / "hosp" / name).write_bytes(b"")
    with pytest.raises(RawInputError) as err:
        build_staged("patients", raw, data, SETTINGS)
    assert name in str(err.value) and "no header" in str(err.value)
    assert good.path.read_bytes() == before


def test_corrupt_gzip_message_carries_no_row_content(tmp_path: Path) -> None:
    raw = _builder().write(tmp_path / "raw", gz=())
    path = raw / "note" / "radiology.csv"
    df = pd.read_csv(path)
    df.loc[len(df)] = ["r9", 10000001, "", "RR", 1, "2150-01-01 11:00:00", "", CANARY * 50]
    blob = gzip.compress(df.to_csv(index=False).encode())
    path.unlink()
    (raw / "note" / "radiology.csv.gz").write_bytes(blob[: len(blob) - 20])
    with pytest.raises(RawInputError) as err:
        build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    assert "radiology.csv.gz" in str(err.value) and CANARY not in str(err.value)


# ------------------------------------------------------------------ row-level junk


def test_malformed_timestamps_and_text_in_numbers_are_dropped_and_counted(tmp_path: Path) -> None:
    b = _builder()
    b.subject(12000003)
    b.rows["icustays"][-1]["intime"] = "2150-02-30 10:00:00"  # no such day
    b.subject(13000004)
    b.rows["icustays"][-1]["intime"] = "01/02/2150 10:00"  # wrong format
    b.subject(14000005)
    b.rows["icustays"][-1]["stay_id"] = "thirty"  # text in an integer column
    b.lab(10000001, 50912, INTIME + H, "n/a")  # text in valuenum
    b.lab(10000001, 50912, INTIME + 2 * H, 1.1)
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data")
    drops = res["staged_icustays"].stats["dropped_by_reason"]
    assert drops == {"intime unparseable": 2, "stay_id not an integer": 1}
    assert res["staged_labevents"].stats["rows_dropped"] == 1
    assert res["staged_labevents"].stats["rows"] == 1
    cohort = pd.read_parquet(tmp_path / "data" / "cohort.parquet")
    assert sorted(cohort["stay_id"]) == [30000001, 30000002]


def test_duplicated_rows_and_stay_ids_are_dropped_and_counted(tmp_path: Path) -> None:
    b = _builder()
    for table in ("patients", "admissions", "icustays"):
        b.rows[table].append(dict(b.rows[table][0]))  # an exact duplicate row
    b.rows["icustays"].append({**b.rows["icustays"][1], "hadm_id": 20000001})  # stay_id reused
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data")
    assert res["staged_patients"].stats["dropped_by_reason"] == {"duplicate subject_id": 1}
    assert res["staged_admissions"].stats["dropped_by_reason"] == {"duplicate hadm_id": 1}
    assert res["staged_icustays"].stats["dropped_by_reason"] == {"duplicate stay_id": 2}
    cohort = pd.read_parquet(tmp_path / "data" / "cohort.parquet")
    assert cohort["stay_id"].is_unique and len(cohort) == 2


# ------------------------------------------------------------------ notes


def _with_note_text(tmp_path: Path, text: bytes, rows_before: int = 0) -> Path:
    b = _builder()
    for i in range(rows_before):  # push the bad row past the header reader's first block
        b.note("radiology", f"r{i}", 10000001, "", "RR", INTIME + H)
    b.note("radiology", "bad", 11000002, "", "RR", INTIME + H)
    b.rows["radiology"][-1]["text"] = "@@PLACEHOLDER@@"
    raw = b.write(tmp_path / "raw")
    path = raw / "note" / "radiology.csv"
    path.write_bytes(path.read_bytes().replace(b"@@PLACEHOLDER@@", text))
    return raw


@pytest.mark.parametrize("rows_before", [0, 400], ids=["near-header", "deep-in-file"])
def test_invalid_utf8_in_a_note_is_clear_and_leaks_no_text(
    tmp_path: Path, rows_before: int
) -> None:
    raw = _with_note_text(tmp_path, CANARY.encode() + b" \xff\xfe broken", rows_before)
    try:
        res = build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    except RawInputError as err:
        msg = str(err)
        assert "radiology.csv" in msg and CANARY not in msg
        assert "UTF-8" in msg or "utf-8" in msg
        assert "download it again" in msg or "PhysioNet" in msg
    else:  # accepted: staged with the row kept or dropped and counted
        staged = pd.read_parquet(res.path)
        assert res.stats["rows"] + res.stats["rows_dropped"] == rows_before + 1
        assert len(staged) == res.stats["rows"]


def test_megabytes_of_note_text_stage_in_full(tmp_path: Path) -> None:
    text = ("word " * 700_000).encode()  # 3.5 MB, above DuckDB's 2 MiB default line limit
    raw = _with_note_text(tmp_path, text)
    res = build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    staged = pd.read_parquet(res.path).set_index("note_id")
    assert len(staged.loc["bad", "text"]) == len(text)


def test_note_table_larger_than_a_read_buffer_with_multiline_notes_stages(
    tmp_path: Path,
) -> None:
    """Regression: DuckDB's parallel CSV scanner refused null_padding with quoted newlines
    once a note file spanned two 32 MiB buffers (the 20,000-stay synthetic set hit it)."""
    b = RawBuilder()
    b.subject(10000001)
    for i in range(12_000):
        b.note("radiology", f"r{i}", 10000001, "", "RR", INTIME + H)
        b.rows["radiology"][-1]["text"] = "FINDINGS:\nline of report text " * 110
    raw = b.write(tmp_path / "raw")
    assert (raw / "note" / "radiology.csv").stat().st_size > 40_000_000
    res = build_staged("radiology", raw, tmp_path / "data", {**SETTINGS, "threads": 2})
    staged = pd.read_parquet(res.path, columns=["note_id", "text"])
    assert len(staged) == 12_000 and res.stats["rows_dropped"] == 0
    assert staged["text"].str.count("\n").eq(110).all()


# ------------------------------------------------------------------ partial cxr/files


def test_cxr_files_with_only_some_folders_uses_the_present_ones(tmp_path: Path) -> None:
    b = _builder()
    b.image("d1", 10000001, 51, INTIME + H)
    b.image("d2", 11000002, 52, INTIME + H)
    raw = b.write(tmp_path / "raw")
    shutil.rmtree(raw / "cxr" / "files" / "p11")  # user downloaded p10 only
    res = build_all(raw, tmp_path / "data")
    cohort = pd.read_parquet(tmp_path / "data" / "cohort.parquet").set_index("stay_id")
    assert cohort.loc[30000001, "has_cxr"] and not cohort.loc[30000002, "has_cxr"]
    chosen = pd.read_parquet(tmp_path / "data" / "cohort_cxr.parquet")
    assert chosen["dicom_id"].tolist() == ["d1"]
    assert res["cohort_cxr"].stats["jpg_files_found"] == 1
