"""The staging statements of chartevents and labevents as Polars expressions, for the
streamed read (`sql.fast_read`): the typing moved out of SQL, exactly.

Why: staging these two tables was about half as fast as Polars doing the same work, and
most of the difference was DuckDB's fixed cost of running `sql/staging/chartevents.sql`
(or `labevents.sql`) once per ~24 MiB piece of the file (loading the piece's rows, the
statement, the scratch write): about 0.1 s a piece. Polars, which has tokenised the piece
already, types it in the same pass for a fraction of that.

The SQL files stay the definition: their text is what the staged table's fingerprint
hashes, DuckDB's reader runs them unchanged, and a piece the expressions here cannot
decide goes through them (below). `STATEMENT_SHA256` pins the text these expressions
were written against: if a statement changes, the streamed read runs the SQL on every
piece until the expressions are brought in line (`tests/test_fast_typing.py` fails until
then).

Exactly DuckDB's result, or none. A value is *decided* here when
- an integer or a double: Polars' cast reads it (every string Polars reads as a number,
  DuckDB's `TRY_CAST` reads as the same number; where Polars reads infinity or NaN,
  DuckDB reads NULL or the same, and the row is rejected for the same reason either way:
  a rejected row's values are never written);
- a time: it has the plain form `YYYY-MM-DD HH:MM:SS`, every field in range (`PLAIN_TIME`;
  a day its month lacks, such as 2130-02-30, is NULL in both);
- or it is absent (NULL, an empty field).
Any other value (`' 5'`, `'5.0'` or `'1e3'` as an id, `'0x10'`, an out-of-range
integer, a time without seconds, with fractions of a second or a leap second) makes its
piece *undecided*: DuckDB runs the statement over the piece, as before. These rules are
checked against DuckDB on odd and random strings by `tests/test_fast_typing.py`. In real
MIMIC files every value is decided, so every piece is typed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sql.runner import load_sql

__all__ = ["PLAIN_TIME", "SPECS", "TypingSpec", "spec_for", "type_piece"]

# a time of the plain form (every field in range; the day may not exist in its month)
PLAIN_TIME = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) "
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"
)
TS_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class TypingSpec:
    """One staging statement: its output columns with their casts (in SELECT order), the
    reasons of `_reject` in CASE order (column, reason; `valuenum` means NULL or not
    finite, every other column NULL), the columns `_unparsed` names, in order."""

    statement: str  # sql/<statement>.sql
    source: str  # variables.source of the item ids it keeps
    columns: tuple[tuple[str, str], ...]
    reasons: tuple[tuple[str, str], ...]
    unparsed: tuple[str, ...]


SPECS = {
    "chartevents": TypingSpec(
        statement="staging/chartevents",
        source="chart",
        columns=(
            ("subject_id", "int64"),
            ("hadm_id", "int64"),
            ("stay_id", "int64"),
            ("itemid", "int32"),
            ("charttime", "timestamp"),
            ("storetime", "timestamp"),
            ("valuenum", "double"),
            ("valueuom", "text"),
        ),
        reasons=(
            ("itemid", "itemid not an integer"),
            ("stay_id", "stay_id not an integer"),
            ("subject_id", "subject_id not an integer"),
            ("charttime", "charttime unparseable"),
            ("valuenum", "valuenum empty or not numeric"),
        ),
        unparsed=("hadm_id", "storetime"),
    ),
    "labevents": TypingSpec(
        statement="staging/labevents",
        source="lab",
        columns=(
            ("labevent_id", "int64"),
            ("subject_id", "int64"),
            ("hadm_id", "int64"),
            ("itemid", "int32"),
            ("charttime", "timestamp"),
            ("storetime", "timestamp"),
            ("valuenum", "double"),
            ("valueuom", "text"),
        ),
        reasons=(
            ("itemid", "itemid not an integer"),
            ("subject_id", "subject_id not an integer"),
            ("charttime", "charttime unparseable"),
            ("valuenum", "valuenum empty or not numeric"),
        ),
        unparsed=("labevent_id", "hadm_id", "storetime"),
    ),
}
STATEMENT_SHA256 = {
    "chartevents": "7d3a4a88e38771f4f51024c27ed75c35df69951b8b442b47e9389287b4a340a7",
    "labevents": "d18f4570271711d347f1a0991f82d1f936088ebabc1c5b319b1ed817d94f2083",
}


def statement_sha256(table: str) -> str:
    return hashlib.sha256(load_sql(SPECS[table].statement).encode()).hexdigest()


def spec_for(table: str) -> TypingSpec | None:
    """The table's spec, or None when it has none or its statement is not the text the
    expressions were written against (then DuckDB runs the statement on every piece)."""
    spec = SPECS.get(table)
    if spec is None or statement_sha256(table) != STATEMENT_SHA256[table]:
        return None
    return spec


def _typed(raw: Any, kind: str) -> Any:
    import polars as pl

    if kind == "timestamp":
        return raw.str.to_datetime(TS_FORMAT, time_unit="us", strict=False, cache=False)
    dtype = {"int64": pl.Int64, "int32": pl.Int32, "double": pl.Float64}[kind]
    return raw.cast(dtype, strict=False)


def _undecided(raw: Any, typed: Any, kind: str) -> Any:
    """Whether a row's value is undecided here (module docstring)."""
    if kind == "timestamp":  # of the plain form but no such day: NULL, as in DuckDB
        return raw.is_not_null() & ~raw.str.contains(PLAIN_TIME)
    return raw.is_not_null() & typed.is_null()


def type_piece(frame: Any, spec: TypingSpec, ids: list[int]) -> Any | None:
    """The statement's rows for `frame` (the piece's rows, every column a string, empty
    -> NULL, in file order): the output columns, `_reject` and `_unparsed`, as a Polars
    DataFrame, in file order. None when some value is undecided (module docstring)."""
    import polars as pl

    cast = [(name, kind) for name, kind in spec.columns if kind != "text"]
    typed = frame.with_columns(_typed(pl.col(n), k).alias(f"{n}__typed") for n, k in cast)
    undecided = [_undecided(pl.col(n), pl.col(f"{n}__typed"), k) for n, k in cast]
    if typed.select(pl.any_horizontal(undecided).any()).item():
        return None
    # the statement's WHERE: the item id is a variable's, or present but not an integer
    # (never here: such a value is undecided)
    typed = typed.filter(pl.col("itemid__typed").is_in(ids))
    reject: Any = None
    for name, reason in spec.reasons:
        col = pl.col(f"{name}__typed")
        bad = (col.is_null() | ~col.is_finite()) if name == "valuenum" else col.is_null()
        reject = (pl.when(bad) if reject is None else reject.when(bad)).then(pl.lit(reason))
    joined = pl.concat_str(
        [
            pl.when(pl.col(name).is_not_null() & pl.col(f"{name}__typed").is_null())
            .then(pl.lit(name))
            for name in spec.unparsed
        ],
        separator=" ",
        ignore_nulls=True,
    )
    return typed.select(
        *(pl.col(n if k == "text" else f"{n}__typed").alias(n) for n, k in spec.columns),
        reject.otherwise(pl.lit(None, pl.String)).alias("_reject"),
        pl.when(joined == "").then(pl.lit(None, pl.String)).otherwise(joined).alias("_unparsed"),
    )
