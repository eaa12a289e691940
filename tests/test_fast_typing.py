"""The Polars typing of the streamed read (`sql.fast_typing`) against the staging
statements it replaces: on every value it decides, the same typed value, the same
rejection reason and the same `_unparsed` as DuckDB's `TRY_CAST`/`try_strptime`; every
value of the plain MIMIC form decided; everything it cannot decide handed to DuckDB."""

from __future__ import annotations

import random
import struct
from typing import Any

import pyarrow as pa
import pytest

from sql import RAW_TABLES
from sql.fast_read import variable_ids
from sql.fast_typing import SPECS, STATEMENT_SHA256, spec_for, statement_sha256, type_piece
from sql.runner import connect, load_sql
from tests.cohort_fixtures import SETTINGS

pl = pytest.importorskip("polars")

# odd values for each kind of cast: DuckDB's casts accept some of them (spaces, signs,
# decimals and exponents as integers, hex, underscores, 'inf', 'NaN', times without
# seconds or with fractions) and refuse others
ODD_INTS = [
    "5", "-5", "0", "-0", "+5", " 5", "5 ", "\t5", "05", "0220045", "5.0", "5.5", "5.4", "-5.5",
    "1e3", "1E3", "0x10", "0b11", "1_000", "", " ", "abc", "5a", "--5", "+-5", "½",
    "2147483647", "2147483648", "-2147483648", "-2147483649", "99999999999",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "000000000000000000000001", "220045", " 220045", "220045 ", "+220045", "220045.0",
    "'220045'", "２２００４５", "nan", "inf", "+0", "-+5", "5-", "٣", "0o17", "1.", ".5",
]  # fmt: skip
ODD_DOUBLES = [
    "5", "5.", ".5", "-.5", "5.0", "-0", "-0.0", "0.1", "1e3", "1E-05", "1e-310", "1e308",
    "1e309", "-1e309", "+5", " 5", "5 ", "inf", "-inf", "Infinity", "NaN", "nan", "-nan", "",
    "1_000", "0x10", "1,5", "1.2.3", "e5", "5e", "1e+2", "0.30000000000000004",
    "123456789012345678901234567890", "9007199254740993", "2.2250738585072014e-308", "abc",
    "98.6", "0.05", "120", "00012.50", "+.5", "-.5e1", "5e+", ".e5", "1.e5", "0x1p3", "1d5",
    "1f", "+0", "-inf5", "infinityx", "1e0500", "-1e-0500", "٣", "1 000", "1.5.", "--1",
]  # fmt: skip
ODD_TIMES = [
    "2150-01-01 10:00:00", "2150-01-01 10:00", "2150-01-01 10:00:00.5",
    "2150-01-01 10:00:00.123456", "2150-01-01 10:00:00.1234567", "2150-01-01", "2150-1-1 1:2:3",
    "2130-02-30 10:00:00", "2128-02-29 10:00:00", "2130-02-29 10:00:00", "2100-02-29 00:00:00",
    "2000-02-29 00:00:00", "2130-04-31 00:00:00", "2130-13-01 00:00:00", "2130-00-10 00:00:00",
    "2130-01-00 00:00:00", "2130-01-32 00:00:00", "2130-01-01 24:00:00", "2130-01-01 23:60:00",
    "2130-01-01 23:59:60", "2130-01-01 23:59:59", " 2130-01-01 10:00:00", "2130-01-01 10:00:00 ",
    "2130-01-01  10:00:00", "2130-01-01T10:00:00", "0000-01-01 00:00:00", "0001-01-01 00:00:00",
    "+150-01-01 10:00:00", "-150-01-01 10:00:00", " 150-01-01 10:00:00", "2150-01-01 10:00:0 ",
    "2150-01-0110:00:00 ", "2150-01-01 10:00:+0", "2150-+1-01 10:00:00", "2150-01-01 +0:00:00",
    "02150-1-01 10:00:00", "21500-1-1 10:00:00 ", "2150-1-01 10:00:00 ", "2150-01-01 1:00:00 ",
    "2150-01-01 10:0:000", "2150-01-01 010:0:00", "2150-01-01 10:00:1.",
    "9999-12-31 23:59:59", "12130-01-01 00:00:00", "", "not a time", "2130/01/01 10:00:00",
]  # fmt: skip
KINDS = {"int64": ODD_INTS, "int32": ODD_INTS, "double": ODD_DOUBLES, "timestamp": ODD_TIMES}
# what every real MIMIC value looks like: decided by Polars, never handed to DuckDB
PLAIN_VALUES = {
    "int64": ["10000032", "0", "-1", "29079034", "123456789012345678"],
    "int32": ["220045", "50912", "0", "-7"],
    "double": ["98.6", "120", "0.05", "-3", "1e-05", "1.5E+10", "-0.0", ".5"],
    "timestamp": ["2180-07-23 21:45:00", "2128-02-29 00:00:00", "2130-02-30 10:00:00"],
}


def _row(table: str, item: int) -> dict[str, str | None]:
    """A valid row of `table`'s raw columns, as strings."""
    base = {
        "subject_id": "10000032", "hadm_id": "29079034", "stay_id": "39553978",
        "labevent_id": "172061", "itemid": str(item), "charttime": "2180-07-23 21:45:00",
        "storetime": "2180-07-23 22:00:00", "valuenum": "98.6", "valueuom": "bpm",
    }  # fmt: skip
    return {c: base[c] for c in RAW_TABLES[table].columns}


def _duckdb_rows(con: Any, table: str, frame: Any) -> list[tuple[Any, ...]]:
    con.register("odd_rows", frame.to_arrow())
    con.execute("CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM odd_rows")
    result = con.execute(load_sql(SPECS[table].statement)).arrow()
    rows = _table_rows(result.read_all() if isinstance(result, pa.RecordBatchReader) else result)
    con.unregister("odd_rows")
    return rows


def _table_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows with times as microseconds (year 0 is a DuckDB and Polars time, not Python's)."""
    columns = [
        c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in table.columns
    ]
    rows = zip(*(c.to_pylist() for c in columns), strict=True)
    return [_comparable(r) for r in rows]


def _comparable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the staging keeps of a statement row: a rejected row counts by its reason
    alone (`_reject`, second to last; its values are never written), a kept row is its
    values (floats by their bits: -0.0 is not 0.0) and `_unparsed`."""
    if row[-2] is not None:
        return ("rejected", row[-2])
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row)


def _polars_rows(table: str, frame: Any, ids: list[int]) -> list[tuple[Any, ...]] | None:
    spec = spec_for(table)
    assert spec is not None
    typed = type_piece(frame, spec, ids)
    if typed is None:
        return None
    return _table_rows(typed.to_arrow())


def _frame(table: str, rows: list[dict[str, str | None]]) -> Any:
    cols = RAW_TABLES[table].columns
    return pl.DataFrame({c: [r[c] for r in rows] for c in cols}, schema={c: pl.String for c in cols})


@pytest.fixture(scope="module")
def con() -> Any:
    c = connect(SETTINGS)
    yield c
    c.close()


def test_the_expressions_match_the_statements_text() -> None:
    """Changing a staging statement means changing `sql.fast_typing` to match (then
    this hash); until then the streamed read leaves every piece to DuckDB."""
    for table in SPECS:
        assert statement_sha256(table) == STATEMENT_SHA256[table], (
            f"sql/{SPECS[table].statement}.sql changed: bring sql/fast_typing.py in line"
        )
        assert spec_for(table) is SPECS[table]
        assert [c for c, _ in SPECS[table].columns] == list(RAW_TABLES[table].columns)


@pytest.mark.parametrize("table", sorted(SPECS))
def test_each_odd_value_is_typed_as_duckdb_types_it_or_left_to_duckdb(
    con: Any, table: str
) -> None:
    """One row per (column, odd value), the rest of the row valid: Polars' result equals
    the statement's on every row it decides (value, rejection reason, `_unparsed`)."""
    ids = variable_ids(con, RAW_TABLES[table])
    item = ids[0]
    decided = undecided = 0
    for column, kind in SPECS[table].columns:
        if kind == "text":
            continue
        for value in KINDS[kind] + [None]:
            row = _row(table, item)
            row[column] = None if value == "" else value  # the read gives NULL for empty
            frame = _frame(table, [row])
            polars = _polars_rows(table, frame, ids)
            if polars is None:
                undecided += 1
                continue
            decided += 1
            assert polars == _duckdb_rows(con, table, frame), (table, column, value)
    assert decided > 60 and undecided > 100, (decided, undecided)  # both sides of the line are exercised


@pytest.mark.parametrize("table", sorted(SPECS))
def test_plain_values_are_decided(con: Any, table: str) -> None:
    ids = variable_ids(con, RAW_TABLES[table])
    for column, kind in SPECS[table].columns:
        for value in PLAIN_VALUES.get(kind, []):
            row = _row(table, ids[-1])
            row[column] = value if column != "itemid" else str(ids[1])
            frame = _frame(table, [row])
            polars = _polars_rows(table, frame, ids)
            assert polars is not None, (column, value)
            assert polars == _duckdb_rows(con, table, frame), (column, value)


def _random_plain(rng: random.Random, kind: str) -> str | None:
    r = rng.random()
    if r < 0.05:
        return None
    if kind in ("int64", "int32"):
        digits = rng.randint(1, 18 if kind == "int64" else 9)
        return ("-" if rng.random() < 0.1 else "") + "".join(rng.choices("0123456789", k=digits))
    if kind == "double":
        whole = "".join(rng.choices("0123456789", k=rng.randint(0, 20)))
        frac = "".join(rng.choices("0123456789", k=rng.randint(1, 20)))
        text = f"{whole or '0'}.{frac}" if rng.random() < 0.7 else (whole or "7")
        if rng.random() < 0.2:
            text += rng.choice("eE") + rng.choice(["", "+", "-"]) + str(rng.randint(0, 99))
        return ("-" if rng.random() < 0.2 else "") + text
    # timestamps: every field in range, days up to 31 in every month (some no such day)
    return (
        f"{rng.randint(1000, 9999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    )


@pytest.mark.parametrize("table", sorted(SPECS))
def test_random_plain_values_type_as_duckdb_types_them(con: Any, table: str) -> None:
    """Thousands of random values of the plain forms (long mantissas, exponents, invalid
    days, negative ids, NULLs) in one piece: decided, and the same rows as DuckDB's, in
    the same order, with the same reasons and counts."""
    rng = random.Random(14)
    ids = variable_ids(con, RAW_TABLES[table])
    rows = []
    for _ in range(4000):
        row: dict[str, str | None] = {}
        for column, kind in SPECS[table].columns:
            if column == "itemid":
                row[column] = str(rng.choice(ids)) if rng.random() < 0.8 else None
            elif kind == "text":
                row[column] = rng.choice(["bpm", "mg/dL", None, "°C"])
            else:
                row[column] = _random_plain(rng, kind)
        rows.append(row)
    frame = _frame(table, rows)
    polars = _polars_rows(table, frame, ids)
    assert polars is not None
    duck = _duckdb_rows(con, table, frame)
    assert polars == duck
    reasons = {r[1] if r[0] == "rejected" else None for r in duck}
    assert len(reasons) >= 4, reasons  # kept rows and several reasons in play


def test_a_piece_with_one_undecided_value_is_left_to_duckdb(con: Any) -> None:
    ids = variable_ids(con, RAW_TABLES["chartevents"])
    rows = [_row("chartevents", ids[0]) for _ in range(5)]
    spec = spec_for("chartevents")
    assert spec is not None
    assert type_piece(_frame("chartevents", rows), spec, ids) is not None
    rows[3]["valuenum"] = "NaN"  # Polars reads NaN: rejected, as by DuckDB
    assert type_piece(_frame("chartevents", rows), spec, ids) is not None
    rows[3]["stay_id"] = " 39553978"  # Polars reads no integer, DuckDB does
    assert type_piece(_frame("chartevents", rows), spec, ids) is None


def test_typed_columns_have_the_statements_types(con: Any) -> None:
    for table in SPECS:
        ids = variable_ids(con, RAW_TABLES[table])
        frame = _frame(table, [_row(table, ids[0])])
        spec = spec_for(table)
        assert spec is not None
        typed = type_piece(frame, spec, ids)
        assert typed is not None
        con.register("odd_rows", frame.to_arrow())
        con.execute("CREATE OR REPLACE TEMP VIEW raw AS SELECT * FROM odd_rows")
        duck = con.execute(load_sql(spec.statement)).arrow()
        if isinstance(duck, pa.RecordBatchReader):
            duck = duck.read_all()
        con.unregister("odd_rows")
        ours = typed.to_arrow(compat_level=pl.CompatLevel.oldest())
        assert ours.column_names == duck.column_names
        for a, b in zip(ours.schema, duck.schema, strict=True):
            same = a.type == b.type or {str(a.type), str(b.type)} <= {"string", "large_string"}
            assert same, (a, b)
