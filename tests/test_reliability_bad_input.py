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

import contextlib
import gzip
import os
import shutil
import subprocess
import traceback
from pathlib import Path

import pandas as pd
import pytest
from dagster import materialize

from assets.sources import mimic_raw
from plumbing.resources import ProjectResource
from sql import RawInputError, build_staged
from tests.cohort_fixtures import (
    ACCEPT_DROPS,
    COLUMNS,
    INTIME,
    SETTINGS,
    H,
    RawBuilder,
    build_all,
    write_csv,
)

CANARY = "CANARY-7f3a9c-PATIENT-TEXT"


def _builder() -> RawBuilder:
    b = RawBuilder()
    b.subject(10000001)
    b.subject(11000002)
    return b


def _chain_text(err: BaseException) -> str:
    """Everything an exception carries to a log: its traceback text, and every cause and
    context down the chain (the way Dagster prints and stores it)."""
    seen, text = set(), "".join(traceback.format_exception(err))
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text += f"{e!r} {e} {getattr(e, 'object', b'')!r}\n"
        todo += [e.__cause__, e.__context__]
    return text


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
    res = build_all(raw, tmp_path / "data", staging=ACCEPT_DROPS)
    drops = res["staged_icustays"].stats["dropped_by_reason"]
    assert drops == {"intime unparseable": 2, "stay_id not an integer": 1}
    assert res["staged_labevents"].stats["rows_dropped"] == 1
    assert res["staged_labevents"].stats["rows"] == 1
    cohort = pd.read_parquet(tmp_path / "data" / "cohort.parquet")
    assert sorted(cohort["stay_id"]) == [30000001, 30000002]


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    b = _builder()
    for table in ("patients", "admissions", "icustays"):
        b.rows[table].append(dict(b.rows[table][0]))  # an exact duplicate row
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data", staging=ACCEPT_DROPS)
    assert res["staged_patients"].stats["dropped_by_reason"] == {"duplicate subject_id": 1}
    assert res["staged_admissions"].stats["dropped_by_reason"] == {"duplicate hadm_id": 1}
    assert res["staged_icustays"].stats["dropped_by_reason"] == {"duplicate stay_id": 1}
    cohort = pd.read_parquet(tmp_path / "data" / "cohort.parquet")
    assert sorted(cohort["stay_id"]) == [30000001, 30000002]


def _staged_rows(res) -> pd.DataFrame:
    df = pd.read_parquet(res.path)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.parametrize(
    ("table", "key", "change"),
    [
        ("icustays", "stay_id", {"hadm_id": 20000001}),
        ("admissions", "hadm_id", {"dischtime": "2150-01-20 08:00:00"}),
        ("patients", "subject_id", {"anchor_age": 70}),
    ],
)
def test_conflicting_duplicate_keys_drop_every_copy_whatever_the_row_order(
    tmp_path: Path, table: str, key: str, change: dict
) -> None:
    """The same key with different content: no row order may pick the winner."""
    staged = []
    for order in ("as written", "reversed"):
        b = _builder()
        b.rows[table].append({**b.rows[table][1], **change})  # key of the second subject
        if order == "reversed":
            b.rows[table].reverse()
        raw = b.write(tmp_path / order / "raw")
        res = build_all(raw, tmp_path / order / "data", staging=ACCEPT_DROPS)
        drops = res[f"staged_{table}"].stats["dropped_by_reason"]
        assert drops == {f"conflicting duplicate {key}": 2}
        assert any(f"conflicting duplicate {key}: 2" in w for w in res[f"staged_{table}"].warnings)
        staged.append(_staged_rows(res[f"staged_{table}"]))
        cohort = pd.read_parquet(tmp_path / order / "data" / "cohort.parquet")
        assert cohort["stay_id"].tolist() == [30000001]  # the conflicting stay is out
    pd.testing.assert_frame_equal(staged[0], staged[1])


def test_conflicting_duplicate_note_ids_are_dropped_not_listed_twice(tmp_path: Path) -> None:
    b = _builder()
    b.note("radiology", "r1", 10000001, "", "RR", INTIME + H)
    b.note("radiology", "r1", 10000001, "", "RR", INTIME + 2 * H)  # same id, other time
    b.note("radiology", "r2", 10000001, "", "RR", INTIME + H)
    b.rows["radiology"].append(dict(b.rows["radiology"][-1]))  # exact copy: one kept
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data", staging=ACCEPT_DROPS)
    assert res["staged_radiology"].stats["dropped_by_reason"] == {
        "conflicting duplicate note_id": 2,
        "duplicate note_id": 1,
    }
    notes = pd.read_parquet(tmp_path / "data" / "cohort_notes.parquet")
    assert notes["note_id"].tolist() == ["r2"]


# ------------------------------------------------------------------ rejection threshold


def _many(n: int) -> RawBuilder:
    b = RawBuilder()
    for i in range(n):
        b.subject(10000001 + i)
    return b


def test_rejecting_most_of_a_required_table_fails_and_keeps_the_earlier_cohort(
    tmp_path: Path,
) -> None:
    b = _many(3)
    raw, data = b.write(tmp_path / "raw"), tmp_path / "data"
    build_all(raw, data)
    before = {p.name: p.read_bytes() for p in data.glob("*.parquet")}
    for row in b.rows["admissions"]:
        row["admittime"] = f"{CANARY} 01/02/2150"  # every row malformed
    write_csv(raw / "hosp" / "admissions.csv", COLUMNS["admissions"], b.rows["admissions"])
    with pytest.raises(RawInputError) as err:
        build_all(raw, data)
    msg = str(err.value)
    assert str(raw / "hosp" / "admissions.csv") in msg
    assert "3 of 3 rows (100.0%)" in msg and "admittime unparseable: 3" in msg
    assert "max_rejected_fraction = 1.0%" in msg and "No output was replaced" in msg
    assert CANARY not in _chain_text(err.value)
    assert {p.name: p.read_bytes() for p in data.glob("*.parquet")} == before


def test_rejecting_a_small_share_warns_with_counts_and_stages_the_rest(tmp_path: Path) -> None:
    b = _many(101)
    b.rows["icustays"][-1]["intime"] = CANARY  # 1 of 101 rows: under 1%
    b.rows["admissions"][0]["deathtime"] = "yesterday"  # present, not a time: kept as NULL
    b.rows["admissions"][1]["deathtime"] = CANARY
    b.chart(10000001, 30000001, "2200x45", INTIME + H, 80)  # malformed item id: counted
    for k in range(150):
        b.chart(10000001, 30000001, 220045, INTIME + k * H / 10, 80)
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data")
    icu = res["staged_icustays"]
    assert icu.stats["rows"] == 100 and icu.stats["dropped_by_reason"] == {"intime unparseable": 1}
    assert icu.warnings == [f"{raw}/icu/icustays.csv: 1 of 101 rows dropped. By reason: intime unparseable: 1."]
    adm = res["staged_admissions"]
    assert adm.stats["rows"] == 101 and adm.stats["values_unparsed_by_column"] == {"deathtime": 2}
    assert adm.warnings == [
        f"{raw}/hosp/admissions.csv: values present but not parseable, kept as empty (NULL), "
        "by column: deathtime: 2."
    ]
    chart = res["staged_chartevents"].stats
    assert chart["rows"] == 150 and chart["dropped_by_reason"] == {"itemid not an integer": 1}
    assert not any(CANARY in w for r in res.values() for w in r.warnings)


def test_the_threshold_is_a_setting(tmp_path: Path) -> None:
    from sql import StagingParams

    b = _many(4)
    b.rows["icustays"][0]["intime"] = "garbage"  # 25% of the rows
    raw = b.write(tmp_path / "raw")
    with pytest.raises(RawInputError, match="25.0%"):
        build_staged("icustays", raw, tmp_path / "data", SETTINGS)
    res = build_staged(
        "icustays", raw, tmp_path / "data", SETTINGS, params=StagingParams(0.25)
    )
    assert res.stats["rows"] == 3
    with pytest.raises(RawInputError, match="25.0%"):  # a reused output is held to it too
        build_staged("icustays", raw, tmp_path / "data", SETTINGS, params=StagingParams(0.2))


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


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
@pytest.mark.parametrize("rows_before", [0, 400], ids=["near-header", "deep-in-file"])
def test_invalid_utf8_in_a_note_names_the_encoding_and_where_and_leaks_no_text(
    tmp_path: Path, rows_before: int, gz: bool
) -> None:
    raw = _with_note_text(tmp_path, CANARY.encode() + b" \xff\xfe broken", rows_before)
    path = raw / "note" / "radiology.csv"
    data = path.read_bytes()
    offset = data.index(b"\xff")
    line = data[:offset].count(b"\n") + 1
    if gz:
        path.unlink()
        path = path.with_suffix(".csv.gz")
        path.write_bytes(gzip.compress(data))
    with pytest.raises(RawInputError) as err:
        build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    msg = str(err.value)
    assert f"{path}: not valid UTF-8 at line {line}, byte offset {offset}" in msg
    assert "gzip -t" not in msg and "corrupt" not in msg and "iconv" in msg
    assert CANARY not in _chain_text(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_a_byte_order_mark_before_the_header_is_accepted(tmp_path: Path, gz: bool) -> None:
    b = _builder()
    plain = build_staged("patients", b.write(tmp_path / "plain"), tmp_path / "d1", SETTINGS)
    raw = b.write(tmp_path / "bom", gz=("patients",) if gz else ())
    path = raw / "hosp" / ("patients.csv.gz" if gz else "patients.csv")
    text = (gzip.decompress if gz else bytes)(path.read_bytes())
    bom = b"\xef\xbb\xbf" + text
    path.write_bytes(gzip.compress(bom) if gz else bom)
    res = build_staged("patients", raw, tmp_path / "d2", SETTINGS)
    pd.testing.assert_frame_equal(pd.read_parquet(res.path), pd.read_parquet(plain.path))


def test_library_errors_become_ours_with_nothing_of_the_row_in_the_chain(tmp_path: Path) -> None:
    """The class, not one example: whatever the reader (DuckDB, or pyarrow on a faster read
    path) says about a row, the error leaving sql/ is built from a category and numbers."""
    import duckdb
    import pyarrow as pa

    from sql.errors import guarded

    path = tmp_path / "radiology.csv"
    path.write_bytes(b"a,b\n1,2\n")
    quoted = [
        pa.ArrowInvalid(f"CSV parse error: Expected 8 columns, got 9: r1,{CANARY},x"),
        duckdb.InvalidInputException(f"CSV Error on Line: 7\nOriginal Line: {CANARY}\nValue with unterminated quote found."),
        duckdb.ConversionException(f"Could not convert string '{CANARY}' to INT64"),
        UnicodeDecodeError("utf-8", CANARY.encode() + b"\xff", len(CANARY), len(CANARY) + 1, "invalid start byte"),
    ]  # fmt: skip
    expected = ["different number of fields", "quoted field near line 7", "ConversionException", "not valid UTF-8"]
    for error, words in zip(quoted, expected, strict=True):

        def fail(error: BaseException = error) -> None:
            raise error

        for kwargs in ({"source": path}, {"what": "cohort"}):
            with pytest.raises(Exception) as err:
                guarded(fail, **kwargs)  # type: ignore[arg-type]
            assert CANARY not in _chain_text(err.value), (error, kwargs)
            assert err.value.__cause__ is None and err.value.__context__ is None
        with pytest.raises(RawInputError, match=words):
            guarded(fail, source=path)


    def sql_mistake() -> None:
        raise duckdb.CatalogException("Catalog Error: Table with name raw does not exist!")

    with pytest.raises(RuntimeError) as err:  # our SQL, not the file: never "truncated"
        guarded(sql_mistake, source=path, what="staged_radiology")
    assert "CatalogException" in str(err.value) and "truncated" not in str(err.value)


@contextlib.contextmanager
def _read_only(folder: Path):
    """`folder` read-only for this process: by its mode, or, as root (whom modes do not
    bind), by a read-only bind mount over it (skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    mount = ["mount", "--bind", str(folder), str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("root without the right to mount: cannot make a folder read-only")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_data_folder_says_the_folder_cannot_be_written(tmp_path: Path) -> None:
    raw, data = _builder().write(tmp_path / "raw"), tmp_path / "data"
    settings = {**SETTINGS, "temp_directory": str(tmp_path / "spill")}
    good = build_staged("patients", raw, data, settings)
    before = good.path.read_bytes()
    with _read_only(data), pytest.raises(OSError) as err:
        build_staged("patients", raw, data, settings, force=True)
    msg = str(err.value)
    assert f"Cannot write {data}" in msg and "read-only" in msg, msg
    assert "corrupt" not in msg and "download" not in msg
    assert good.path.read_bytes() == before


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


def test_the_fast_read_fallback_chains_nothing_of_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opt-in Polars read falls back to DuckDB's reader when it fails; Polars' error
    (which may quote the row) must not become the context of the error that follows."""
    import sql.fast_read as fast_read

    def polars_fails(*args: object) -> Path:
        raise ValueError(f"could not parse row: {CANARY}")

    monkeypatch.setattr(fast_read, "enabled", lambda table, path: True)
    monkeypatch.setattr(fast_read, "polars_raw_view", polars_fails)
    raw = _with_note_text(tmp_path, CANARY.encode() + b" \xff broken", 400)
    with pytest.raises(RawInputError) as err:
        build_staged("radiology", raw, tmp_path / "data", SETTINGS)
    assert "not valid UTF-8" in str(err.value)
    assert CANARY not in _chain_text(err.value)
