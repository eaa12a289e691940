"""The Polars read of the big event tables (`sql.fast_read`): byte-identical staged files
between runs, the same staged rows as DuckDB's own reader on awkward values, and the
whole-file gzip check still refusing a truncated download before any output is replaced."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sql import RAW_TABLES, RawInputError, build_staged
from sql.fast_read import ENV, enabled
from tests.cohort_fixtures import SETTINGS

pytest.importorskip("polars")

HEADER = b"subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning\n"  # noqa: E501
# item ids the two readers could see differently; only the SQL's TRY_CAST decides them
AWKWARD = [
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00, 220045,80,80,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045 ,81,81,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,+220045,82,82,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,0220045,83,83,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045.0,84,84,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,,85,85,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,abc,86,86,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,99999999999,87,87,bpm,0",
    b'19999999,29999999,39999999,,2150-01-01 10:00:00,,"220045","Sinus, ""regular""",88,bpm,0',
    b"19999999,29999999,,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045,89,89,bpm,0",
    b"19999999,29999999,39999999,,not a time,2150-01-01 10:05:00,220045,90,90,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045,x,,bpm,0",
    b"19999999,29999999,39999999,,2150-01-01 10:00:00,2150-01-01 10:05:00,220046,91,91,bpm,0",
]


def _chartevents(root: Path, rows: int, extra: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    """`root/icu/chartevents.csv.gz`: `rows` ordinary rows (a quarter of them variables,
    many stays, several gzip-sized blocks) and `extra` lines at the end."""
    path = root / "icu" / "chartevents.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [220045, 220179, 220210, 220277, 224539, 226512, 223900, 220739]
    lines = [HEADER]
    for i in range(rows):
        stay = 30000000 + i // 500
        item = items[i % len(items)]
        minute = i % 500
        lines.append(
            f"{stay - 20000000},{stay - 10000000},{stay},,2150-01-01 {minute // 60 % 24:02d}:"
            f"{minute % 60:02d}:00,2150-01-01 {minute // 60 % 24:02d}:{minute % 60:02d}:30,"
            f"{item},{i % 97},{i % 97}.5,bpm,0\n".encode()
        )
    lines += [line + b"\n" for line in extra]
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path.parent.parent


def _stage(raw: Path, data: Path, reader: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, reader)
    return build_staged("chartevents", raw, data, SETTINGS, force=True).path


def test_fast_read_is_used_for_the_event_tables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("x.csv.gz")
    monkeypatch.delenv(ENV, raising=False)
    assert not enabled(RAW_TABLES["chartevents"], path)  # opt-in
    monkeypatch.setenv(ENV, "polars")
    assert enabled(RAW_TABLES["chartevents"], path) and enabled(RAW_TABLES["labevents"], path)
    assert not enabled(RAW_TABLES["radiology"], path)
    assert not enabled(RAW_TABLES["patients"], path)
    assert not enabled(RAW_TABLES["chartevents"], None)
    monkeypatch.setenv(ENV, "duckdb")
    assert not enabled(RAW_TABLES["chartevents"], path)


def test_staged_parquet_is_byte_identical_between_runs_and_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _chartevents(tmp_path / "raw", 60_000, AWKWARD)
    outs = {}
    for run, reader in enumerate(["polars", "polars", "duckdb", "duckdb"]):
        out = _stage(raw, tmp_path / f"data{run}", reader, monkeypatch)
        outs[run] = out.read_bytes()
    assert outs[0] == outs[1], "two runs of the Polars read differ"
    assert outs[2] == outs[3], "two runs of DuckDB's reader differ"
    assert outs[0] == outs[2], "the Polars read stages other bytes than DuckDB's reader"
    staged = pq.read_table(tmp_path / "data0" / "staged_chartevents.parquet")
    stats = build_staged("chartevents", raw, tmp_path / "data0", SETTINGS).stats  # reused
    # 60,000 ordinary rows: items 220045/220179/220210/220277 are variables (half of them);
    # awkward rows: ' 220045', '220045 ', '+220045', '0220045', '220045.0' (Polars reads no
    # integer there, DuckDB's TRY_CAST does) and '"220045"' kept; no stay, bad time and
    # empty valuenum rejected with their reasons; '' and 220046 are not items
    assert stats["dropped_by_reason"] == {
        "itemid not an integer": 2,  # 'abc' and the overflow: counted, not skipped
        "charttime unparseable": 1,
        "stay_id not an integer": 1,
        "valuenum empty or not numeric": 1,
    }
    kept_awkward = staged.filter(staged["subject_id"].to_numpy() == 19999999)
    assert sorted(kept_awkward["valuenum"].to_pylist()) == [80.0, 81.0, 82.0, 83.0, 84.0, 88.0]
    assert staged.num_rows == 30_000 + 6
    # file order: the ordinary rows first, in the order they were written
    assert staged["stay_id"].to_pylist()[:3] == [30000000] * 3


def test_truncated_gzip_is_refused_by_the_fast_read_before_output_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _chartevents(tmp_path / "raw", 40_000)
    data = tmp_path / "data"
    good = _stage(raw, data, "polars", monkeypatch)
    before = good.read_bytes()
    path = raw / "icu" / "chartevents.csv.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])  # a download cut off
    os.utime(path, ns=(1, 1))  # new identity: no reuse
    with pytest.raises(RawInputError, match=r"chartevents\.csv\.gz.*corrupt or truncated"):
        _stage(raw, data, "polars", monkeypatch)
    assert good.read_bytes() == before
    assert sorted(p.name for p in data.iterdir() if "chartevents" in p.name) == [
        "staged_chartevents.parquet"
    ]


def test_a_file_polars_cannot_read_falls_back_to_duckdbs_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a ragged row (one field too many): Polars refuses it, DuckDB's null_padding read
    # decides as it does today; both readers then give the same staged file or error
    ragged = b"10000001,20000001,30000001,,2150-01-01 10:00:00,,220045,80,80,bpm,0,extra"
    raw = _chartevents(tmp_path / "raw", 2_000, [ragged])
    results = {}
    for reader in ("duckdb", "polars"):
        try:
            results[reader] = _stage(raw, tmp_path / reader, reader, monkeypatch).read_bytes()
        except RawInputError as err:
            results[reader] = type(err).__name__.encode()
    assert results["polars"] == results["duckdb"]
