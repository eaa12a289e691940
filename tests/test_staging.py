"""Staging: bad input is a clear error before any output is replaced; optional modules
may be absent; raw files may be .csv or .csv.gz with extra columns in any order."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sql import RawInputError, build_staged, code_version
from sql.runner import load_sql
from tests.cohort_fixtures import SETTINGS, RawBuilder

FIXTURE = Path(__file__).parent / "fixtures" / "mimic_iv_demo"


def _raw(tmp_path: Path) -> Path:
    b = RawBuilder()
    b.subject(10000001)
    return b.write(tmp_path / "raw", gz=("patients",))


def test_missing_required_file_names_file_and_module(tmp_path):
    raw = _raw(tmp_path)
    (raw / "icu" / "icustays.csv").unlink()
    with pytest.raises(RawInputError, match=r"icu/icustays\.csv\.gz.*missing.*'icu' module"):
        build_staged("icustays", raw, tmp_path / "data", SETTINGS)


def test_missing_column_names_file_and_column(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "hosp" / "admissions.csv"
    df = pd.read_csv(path).drop(columns=["dischtime"])
    df.to_csv(path, index=False)
    with pytest.raises(RawInputError, match=r"admissions\.csv lacks the column\(s\) dischtime"):
        build_staged("admissions", raw, tmp_path / "data", SETTINGS)


def test_corrupt_gzip_is_clear_error_and_keeps_previous_output(tmp_path):
    raw = _raw(tmp_path)
    data = tmp_path / "data"
    good = build_staged("patients", raw, data, SETTINGS)
    before = good.path.read_bytes()
    path = raw / "hosp" / "patients.csv.gz"
    blob = gzip.compress(
        b"subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
        + b"1,F,60,2150,2011 - 2013,\n" * 5000
    )
    path.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(RawInputError, match=r"patients\.csv\.gz.*corrupt or truncated"):
        build_staged("patients", raw, data, SETTINGS)
    assert good.path.read_bytes() == before


def test_garbage_gzip_header_is_clear_error(tmp_path):
    raw = _raw(tmp_path)
    (raw / "hosp" / "patients.csv.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(RawInputError, match="patients.csv.gz"):
        build_staged("patients", raw, tmp_path / "data", SETTINGS)


def test_absent_optional_module_gives_empty_table_with_schema_and_warning(tmp_path):
    raw = _raw(tmp_path)
    shutil.rmtree(raw / "note")
    shutil.rmtree(raw / "cxr")
    res = build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    assert res.warnings and "absent" in res.warnings[0]
    df = pd.read_parquet(res.path)
    assert len(df) == 0
    assert {"note_id", "subject_id", "charttime", "storetime", "text"} <= set(df.columns)
    cxr = pd.read_parquet(build_staged("cxr_metadata", raw, tmp_path / "data", SETTINGS).path)
    assert list(cxr.columns) == [
        "dicom_id", "subject_id", "study_id", "view_position", "study_time", "path"
    ]  # fmt: skip


def test_extra_columns_in_any_order_and_plain_csv(tmp_path):
    raw = _raw(tmp_path)
    path = raw / "icu" / "icustays.csv"
    df = pd.read_csv(path)
    df["extra"] = "x"
    df[list(reversed(df.columns))].to_csv(path, index=False)
    out = pd.read_parquet(build_staged("icustays", raw, tmp_path / "data", SETTINGS).path)
    assert out["stay_id"].tolist() == [30000001]
    assert str(out["intime"].dtype).startswith("datetime64")


def test_header_only_chartevents_stages_empty(tmp_path):
    res = build_staged("chartevents", FIXTURE, tmp_path / "data", SETTINGS)
    assert res.stats["rows"] == 0


def test_code_version_follows_sql_files():
    assert code_version("staged_chartevents") != code_version("staged_labevents")
    assert code_version("cohort") == code_version("cohort")
    assert "variables.csv" in load_sql("staging/chartevents")


@pytest.mark.parametrize("second", ["admissions.csv.gz", "Admissions.csv"])
def test_two_candidate_files_for_one_table_are_refused_naming_both(tmp_path, second):
    from plumbing.raw_layout import check_layout

    raw = _raw(tmp_path)
    data = tmp_path / "data"
    good = build_staged("admissions", raw, data, SETTINGS)
    before = good.path.read_bytes()
    shutil.copy(raw / "hosp" / "admissions.csv", raw / "hosp" / second)
    for run in (
        lambda: build_staged("admissions", raw, data, SETTINGS, force=True),
        lambda: check_layout(raw),
    ):
        with pytest.raises(RawInputError) as err:
            run()
        msg = str(err.value)
        assert "2 files could be hosp/admissions" in msg and second in msg
        assert "admissions.csv" in msg.replace(second, "")
    assert good.path.read_bytes() == before


def test_a_file_named_in_another_case_is_named_not_reported_missing(tmp_path):
    raw = _raw(tmp_path)
    (raw / "hosp" / "admissions.csv").rename(raw / "hosp" / "ADMISSIONS.csv")
    with pytest.raises(RawInputError, match=r"ADMISSIONS\.csv: expected the name admissions"):
        build_staged("admissions", raw, tmp_path / "data", SETTINGS)
