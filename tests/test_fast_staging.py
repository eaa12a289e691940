"""The readers of the big event tables (`sql.fast_read`: the default streamed read, typed
by Polars as the staging statement types, the opt-in whole-file Polars read, DuckDB's
own): byte-identical staged files between runs and between readers, the same staged rows
and counts on awkward values, and the whole-file gzip check still refusing a truncated
download before any output is replaced."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import sql.fast_read as fast_read
import synthetic
from sql import RAW_TABLES, STAGED_NAMES, RawInputError, build_staged
from sql.fast_read import ENV, enabled, reader
from tests.cohort_fixtures import SETTINGS

pytest.importorskip("polars")

DEMO = Path(__file__).parent / "fixtures" / "mimic_iv_demo"

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


def _stage(raw: Path, data: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, how)
    return build_staged("chartevents", raw, data, SETTINGS, force=True).path


def test_fast_read_is_used_for_the_event_tables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path("x.csv.gz")
    monkeypatch.delenv(ENV, raising=False)
    assert reader(RAW_TABLES["chartevents"], path) == "stream"  # the default
    assert reader(RAW_TABLES["labevents"], path) == "stream"
    assert not enabled(RAW_TABLES["chartevents"], path)  # the whole-file Polars read: opt-in
    for name in ("radiology", "patients"):
        assert reader(RAW_TABLES[name], path) == "duckdb"
    assert reader(RAW_TABLES["chartevents"], None) == "duckdb"
    monkeypatch.setenv(ENV, "polars")
    assert enabled(RAW_TABLES["chartevents"], path) and enabled(RAW_TABLES["labevents"], path)
    assert not enabled(RAW_TABLES["radiology"], path)
    assert not enabled(RAW_TABLES["patients"], path)
    assert not enabled(RAW_TABLES["chartevents"], None)
    monkeypatch.setenv(ENV, "duckdb")
    assert not enabled(RAW_TABLES["chartevents"], path)
    assert reader(RAW_TABLES["chartevents"], path) == "duckdb"
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(ValueError, match="stream, polars, duckdb"):
        reader(RAW_TABLES["chartevents"], path)


def test_staged_parquet_is_byte_identical_between_runs_and_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _chartevents(tmp_path / "raw", 60_000, AWKWARD)
    outs = {}
    for run, how in enumerate(["polars", "polars", "duckdb", "duckdb", "stream", "stream"]):
        out = _stage(raw, tmp_path / f"data{run}", how, monkeypatch)
        outs[run] = out.read_bytes()
    assert outs[0] == outs[1], "two runs of the Polars read differ"
    assert outs[2] == outs[3], "two runs of DuckDB's reader differ"
    assert outs[4] == outs[5], "two runs of the streamed read differ"
    assert outs[0] == outs[2], "the Polars read stages other bytes than DuckDB's reader"
    assert outs[4] == outs[2], "the streamed read stages other bytes than DuckDB's reader"
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


@pytest.mark.parametrize("source", ["mimic_iv_demo", "synthetic"])
def test_every_staged_table_is_byte_identical_between_runs(tmp_path: Path, source: str) -> None:
    """Every staged table, the keyed ones too (the duplicate-key rule's window used to hand
    its rows back in a different order each run): two runs, on two threads, same bytes."""
    if source == "synthetic":
        raw = tmp_path / "raw"
        synthetic.generate(raw, stays=150, seed=5, images=False, progress=False)
    else:
        raw = DEMO
    settings = {**SETTINGS, "threads": 2}
    runs = []
    for run in range(2):
        data = tmp_path / f"data{run}"
        runs.append(
            {n: build_staged(n, raw, data, settings, force=True).path.read_bytes() for n in STAGED_NAMES}
        )
    differ = [n for n in STAGED_NAMES if runs[0][n] != runs[1][n]]
    assert not differ, f"staged tables that differ between two runs: {differ}"
    # the keyed tables come out by key
    for name in ("patients", "admissions", "icustays"):
        key = RAW_TABLES[name].key[0]
        keys = pq.read_table(tmp_path / "data0" / f"staged_{name}.parquet")[key].to_pylist()
        assert keys == sorted(keys) and len(keys) > 0


@pytest.mark.parametrize("how", ["stream", "polars", "duckdb"])
def test_truncated_gzip_is_refused_before_output_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    raw = _chartevents(tmp_path / "raw", 40_000)
    data = tmp_path / "data"
    seen = _typing_outcomes(monkeypatch)
    good = _stage(raw, data, how, monkeypatch)
    before = good.read_bytes()
    assert (seen == [True]) if how == "stream" else not seen  # typed by Polars
    path = raw / "icu" / "chartevents.csv.gz"
    blob = path.read_bytes()
    for cut in (len(blob) * 2 // 3, len(blob) - 4):  # cut off mid-stream; only the trailer
        path.write_bytes(blob[:cut])  # a download cut off
        os.utime(path, ns=(cut, cut))  # new identity: no reuse
        with pytest.raises(RawInputError, match=r"chartevents\.csv\.gz.*corrupt or truncated"):
            _stage(raw, data, how, monkeypatch)
        assert good.read_bytes() == before
        assert sorted(p.name for p in data.iterdir() if "chartevents" in p.name) == [
            "staged_chartevents.parquet"
        ]


def test_streamed_read_checks_the_gzip_in_its_own_inflate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed read inflates the file once: no separate `check_gzip` pass."""
    raw = _chartevents(tmp_path / "raw", 5_000)
    calls: list[Path] = []
    monkeypatch.setattr(fast_read, "check_gzip", lambda path: calls.append(path))
    _stage(raw, tmp_path / "stream", "stream", monkeypatch)
    assert calls == []
    _stage(raw, tmp_path / "duckdb", "duckdb", monkeypatch)
    assert len(calls) == 1


# doubled quotes and quoted commas in the (unread) value column and in valueuom
QUOTED = [
    b'19999998,29999998,39999998,,2150-01-01 11:00:00,,220045,"one, ""two"" ,3",92,bpm,0',
    b'19999998,29999998,39999998,,2150-01-01 11:01:00,,220045,"""","""",bpm,0',
    b'19999998,29999998,39999998,,2150-01-01 11:02:00,,220045,"a,b",93,"b""p,m",0',
]
# quoted line breaks: DuckDB's reader refuses them in these tables (its parallel scanner
# with null_padding), the Polars-based reads accept them
NEWLINES = [
    b'19999997,29999997,39999997,,2150-01-01 12:00:00,,220045,"line one\nline ""two""\n,3",94,bpm,0',
    b'19999997,29999997,39999997,,2150-01-01 12:02:00,,220045,"a\r\nb",95,"b""p\nm",0',
]


def _two_members(raw: Path) -> None:
    path = raw / "icu" / "chartevents.csv.gz"
    body = gzip.decompress(path.read_bytes())
    half = body.index(b"\n", len(body) // 2) + 1
    path.write_bytes(gzip.compress(body[:half]) + gzip.compress(body[half:]))


@pytest.mark.parametrize("piece_bytes", [1_000, 50_000])
def test_streamed_read_in_small_pieces_stages_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_bytes: int
) -> None:
    """Many pieces (cut only at record ends, never inside quotes), two gzip members: the
    same staged bytes as DuckDB's reader, in file order, and the same between runs."""
    raw = _chartevents(tmp_path / "raw", 20_000, AWKWARD[:6] + QUOTED * 30 + AWKWARD[6:])
    _two_members(raw)
    monkeypatch.setattr(fast_read, "PIECE_BYTES", piece_bytes)
    streamed = [_stage(raw, tmp_path / f"s{i}", "stream", monkeypatch).read_bytes() for i in (0, 1)]
    duck = _stage(raw, tmp_path / "d", "duckdb", monkeypatch).read_bytes()
    assert streamed[0] == streamed[1] == duck
    staged = pq.read_table(tmp_path / "s0" / "staged_chartevents.parquet")
    assert staged["stay_id"].to_pylist()[:3] == [30000000] * 3  # file order
    assert staged["valueuom"].to_pylist().count('b"p,m') == 30


def test_streamed_read_never_cuts_a_quoted_line_break(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _chartevents(tmp_path / "raw", 5_000, QUOTED + NEWLINES * 40)
    _two_members(raw)
    monkeypatch.setattr(fast_read, "PIECE_BYTES", 700)
    streamed = _stage(raw, tmp_path / "s", "stream", monkeypatch).read_bytes()
    assert streamed == _stage(raw, tmp_path / "p", "polars", monkeypatch).read_bytes()
    staged = pq.read_table(tmp_path / "s" / "staged_chartevents.parquet")
    assert staged["valueuom"].to_pylist().count('b"p\nm') == 40
    assert sorted(set(staged["valuenum"].to_pylist()) & {94.0, 95.0}) == [94.0, 95.0]


def test_record_end_never_cuts_inside_quotes() -> None:
    assert fast_read._record_end(b"a,b\nc,d\ne") == 8
    assert fast_read._record_end(b'a,"b\nc",d\ne,"f\ng') == 10
    assert fast_read._record_end(b'"x\ny') == 0
    assert fast_read._record_end(b'y"\nz', quotes_before=1) == 3  # the quote opened earlier
    assert fast_read._record_end(b"no newline") == 0


def test_streamed_read_falls_back_on_invalid_utf8_in_an_unread_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polars reads only the staged columns; DuckDB checks every column. A bad byte in
    `value` makes the streamed read hand over to DuckDB's reader: today's error."""
    bad = b"19999999,29999999,39999999,,2150-01-01 10:00:00,,220045,caf\xe9,80,bpm,0"
    raw = _chartevents(tmp_path / "raw", 2_000, [bad])
    for how in ("stream", "duckdb"):
        with pytest.raises(RawInputError, match="not valid UTF-8"):
            _stage(raw, tmp_path / how, how, monkeypatch)


def test_corrupt_gzip_is_refused_by_the_streamed_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _chartevents(tmp_path / "raw", 20_000)
    path = raw / "icu" / "chartevents.csv.gz"
    blob = bytearray(path.read_bytes())
    blob[-8] ^= 0xFF  # the CRC of the (complete) stream no longer matches
    path.write_bytes(bytes(blob))
    with pytest.raises(RawInputError, match=r"corrupt or truncated"):
        _stage(raw, tmp_path / "data", "stream", monkeypatch)
    assert not (tmp_path / "data" / "staged_chartevents.parquet").exists()


def test_a_file_polars_cannot_read_falls_back_to_duckdbs_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a ragged row (one field too many): Polars refuses it, DuckDB's null_padding read
    # decides as it does today; both readers then give the same staged file or error
    ragged = b"10000001,20000001,30000001,,2150-01-01 10:00:00,,220045,80,80,bpm,0,extra"
    raw = _chartevents(tmp_path / "raw", 2_000, [ragged])
    results = {}
    for how in ("duckdb", "polars", "stream"):
        try:
            results[how] = _stage(raw, tmp_path / how, how, monkeypatch).read_bytes()
        except RawInputError as err:
            results[how] = type(err).__name__.encode()
    assert results["polars"] == results["duckdb"] == results["stream"]


# values the Polars typing decides as the statement does (an empty stay, a day its month
# lacks, NaN, a storetime that does not parse, no hadm_id, a leading '+' and zeros)
DECIDED_ODD = [
    b"19999996,29999996,,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045,80,80,bpm,0",
    b"19999996,29999996,39999996,,2130-02-30 10:00:00,2150-01-01 10:05:00,220045,81,81,bpm,0",
    b"19999996,29999996,39999996,,2150-01-01 10:00:00,2150-01-01 10:05:00,220045,x,NaN,bpm,0",
    b"19999996,29999996,39999996,,2150-01-01 10:00:00,2130-02-30 10:05:00,220045,82,82,bpm,0",
    b"19999996,,39999996,,2150-01-01 10:00:00,,220179,83,+83.50,mmHg,0",
    b"+19999996,029999996,39999996,,2150-01-01 10:00:00,,+220179,84,-0.0,mmHg,0",
    b"19999996,29999996,39999996,,2150-01-01 10:00:00,,220179,85,1e-3,,0",
]


def _small_blocks(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """The inflate hands over blocks of `block` bytes (else a small file is one block,
    hence one piece, whatever PIECE_BYTES is)."""
    real = fast_read._chunks

    def chunks(path: Path) -> Iterator[bytes]:
        for data in real(path):
            yield from (data[i : i + block] for i in range(0, len(data), block))

    monkeypatch.setattr(fast_read, "_chunks", chunks)


def _typing_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each piece of the streamed read was typed by Polars (else by the SQL)."""
    seen: list[bool] = []
    real = fast_read.type_piece

    def spy(*args: object) -> object:
        typed = real(*args)  # type: ignore[arg-type]
        seen.append(typed is not None)
        return typed

    monkeypatch.setattr(fast_read, "type_piece", spy)
    return seen


@pytest.mark.parametrize("awkward", [False, True])
def test_polars_typing_stages_the_bytes_and_counts_of_the_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, awkward: bool
) -> None:
    """Pieces typed by Polars (`sql.fast_typing`), and with awkward values some pieces
    left to the SQL: the same staged bytes, counts and reasons as DuckDB's reader, the
    same between runs."""
    odd = DECIDED_ODD * 20 + (AWKWARD if awkward else [])
    raw = _chartevents(tmp_path / "raw", 30_000, odd + DECIDED_ODD * 20)
    monkeypatch.setattr(fast_read, "PIECE_BYTES", 200_000)
    _small_blocks(monkeypatch, 50_000)
    seen = _typing_outcomes(monkeypatch)
    streamed = [_stage(raw, tmp_path / f"s{i}", "stream", monkeypatch) for i in (0, 1)]
    assert len(seen) > 10 and all(seen[:5])
    assert (False in seen) is awkward  # an undecided piece goes through the statement
    duck = _stage(raw, tmp_path / "d", "duckdb", monkeypatch)
    assert streamed[0].read_bytes() == streamed[1].read_bytes() == duck.read_bytes()
    ours = build_staged("chartevents", raw, tmp_path / "s0", SETTINGS).stats
    theirs = build_staged("chartevents", raw, tmp_path / "d", SETTINGS).stats
    assert ours == theirs
    assert ours["dropped_by_reason"]["charttime unparseable"] >= 40
    assert ours["dropped_by_reason"]["valuenum empty or not numeric"] >= 40
    assert ours["dropped_by_reason"]["stay_id not an integer"] >= 40
    assert ours["values_unparsed_by_column"]["storetime"] == 40


def _sql_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed read as it was before `sql.fast_typing`: the statement on every piece."""
    monkeypatch.setattr(fast_read, "spec_for", lambda table: None)


def test_pieces_of_more_than_a_row_group_stage_the_bytes_of_the_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces of more than DuckDB's 122,880-row group: DuckDB splits its scratch file of
    such a piece, pyarrow writes one row group; the final write groups the rows alike.
    The same bytes as the statement run on every piece (the streamed read before)."""
    raw = _chartevents(tmp_path / "raw", 2 * 270_000 + 5_000)  # half the rows variables
    monkeypatch.setattr(fast_read, "PIECE_BYTES", 26 << 20)  # ~135,000 rows kept a piece
    seen = _typing_outcomes(monkeypatch)
    ours = _stage(raw, tmp_path / "s", "stream", monkeypatch).read_bytes()
    assert len(seen) == 2 and all(seen)  # 272,500 rows kept: one piece has > 122,880
    _sql_typed(monkeypatch)
    assert ours == _stage(raw, tmp_path / "q", "stream", monkeypatch).read_bytes()
    assert len(seen) == 2  # the statement typed every piece this time
