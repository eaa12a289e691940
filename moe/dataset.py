"""The `multimodal_dataset` table: one row per cohort stay, labels, flags and vectors.

    from moe.dataset import assemble_dataset
    table = assemble_dataset(cohort, ehr_path, notes_path, cxr_dir)

Inputs are the per-modality outputs (`stay_id, vector` Parquet files; the X-ray folder of
`stay_id, dicom_id, ok, vector` shard files). A modality is present for a stay when the
cohort flags it (`has_<mod>`, all true when the column is absent) *and* a vector exists;
a failed X-ray decode (`ok = false`) counts as missing. `vector_column` is the one way the
per-stay vectors are written (a nullable list of float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plumbing.tasks import TASK_NAMES

VECTOR_COLUMNS = ("ehr", "notes", "cxr")
FLAG_OF = {"ehr": "has_ehr", "notes": "has_notes", "cxr": "has_cxr"}
LABELS = TASK_NAMES  # the task registry (plumbing/tasks.py)


def prediction_times(cohort: pd.DataFrame) -> pd.DataFrame:
    """`stay_id, prediction_time` (as datetimes) of the cohort's stays: each stay's t0."""
    t0 = cohort[["stay_id", "prediction_time"]].copy()
    t0["prediction_time"] = pd.to_datetime(t0["prediction_time"])
    return t0


def vector_column(vectors: Sequence[np.ndarray | Sequence[float] | None]) -> pa.Array:
    """A `list<float32>` array, null where a vector is None."""
    return pa.array(
        [None if v is None else np.asarray(v, dtype=np.float32).tolist() for v in vectors],
        type=pa.list_(pa.float32()),
    )


def stay_vectors(stay_ids: Sequence[int], vectors: Sequence[Any]) -> pa.Table:
    """A `stay_id, vector` table (the per-modality output shape `vectors_by_stay` reads)."""
    return pa.table(
        {"stay_id": pa.array(stay_ids, type=pa.int64()), "vector": vector_column(list(vectors))}
    )


def vectors_by_stay(path: Path) -> dict[int, Any]:
    """`stay_id -> vector` of a `stay_id, vector` Parquet file ({} when it does not exist)."""
    if not path.exists():
        return {}
    t = pq.read_table(path, columns=["stay_id", "vector"])
    return dict(zip(t.column("stay_id").to_pylist(), t.column("vector").to_pylist(), strict=True))


def cxr_vectors_by_stay(folder: Path) -> dict[int, Any]:
    """`stay_id -> vector` of the decodable images in the X-ray shard files of `folder`."""
    out: dict[int, Any] = {}
    for f in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        t = pq.read_table(f, columns=["stay_id", "ok", "vector"])
        for s, ok, v in zip(
            *(t.column(c).to_pylist() for c in ("stay_id", "ok", "vector")), strict=True
        ):
            if ok and v is not None:
                out[s] = v
    return out


def assemble_dataset(
    cohort: pd.DataFrame,
    ehr_path: Path,
    notes_path: Path,
    cxr_dir: Path,
    labels: Sequence[str] = LABELS,
) -> pa.Table:
    """One row per cohort stay with labels (one column per task of `labels`), availability
    flags and per-modality vectors."""
    sources = {
        "ehr": vectors_by_stay(ehr_path),
        "notes": vectors_by_stay(notes_path),
        "cxr": cxr_vectors_by_stay(cxr_dir),
    }
    n = len(cohort)
    ids = cohort["stay_id"].astype("int64").tolist()

    def flag(col: str) -> list[bool]:
        if col not in cohort.columns:
            return [True] * n
        return cohort[col].fillna(False).astype(bool).tolist()

    vectors: dict[str, list[Any]] = {}
    for name in VECTOR_COLUMNS:
        src = sources[name]
        vectors[name] = [src.get(s) if f else None for s, f in zip(ids, flag(FLAG_OF[name]), strict=True)]

    def label(col: str) -> pa.Array:
        if col not in cohort.columns:
            return pa.nulls(n, type=pa.int8())
        return pa.array(cohort[col].astype("Int8"), type=pa.int8(), from_pandas=True)

    def nullable(col: str, typ: pa.DataType) -> pa.Array:
        if col not in cohort.columns:
            return pa.nulls(n, type=typ)
        vals = cohort[col].astype(object).where(cohort[col].notna(), None).tolist()
        return pa.array(vals, type=typ, from_pandas=True)

    return pa.table(
        {
            "stay_id": pa.array(ids, type=pa.int64()),
            "split": pa.array(cohort["split"].astype(str).tolist(), type=pa.string()),
            **{c: label(c) for c in labels},
            **{
                FLAG_OF[m]: pa.array([v is not None for v in vectors[m]], type=pa.bool_())
                for m in VECTOR_COLUMNS
            },
            **{m: pa.array(vectors[m], type=pa.list_(pa.float32())) for m in VECTOR_COLUMNS},
            "age": nullable("age", pa.float64()),
            "gender": nullable("gender", pa.string()),
        }
    )


def vector_dims(table: pa.Table) -> dict[str, int]:
    """Vector length per modality column (0 when no stay has one); ValueError if mixed."""
    dims: dict[str, int] = {}
    for c in VECTOR_COLUMNS:
        lengths = {len(v) for v in table.column(c).to_pylist() if v is not None}
        if len(lengths) > 1:
            raise ValueError(f"column {c} has vectors of lengths {sorted(lengths)}")
        dims[c] = lengths.pop() if lengths else 0
    return dims


PATTERN_LEGEND = "E=EHR, N=notes, X=chest X-ray, '-'=missing"


def availability_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """`{split: {pattern: stays}}` with patterns such as 'EN-' (see `PATTERN_LEGEND`)."""
    df = table.select(["split", "has_ehr", "has_notes", "has_cxr"]).to_pandas()
    pattern = (
        df["has_ehr"].map({True: "E", False: "-"})
        + df["has_notes"].map({True: "N", False: "-"})
        + df["has_cxr"].map({True: "X", False: "-"})
    )
    patterns = pd.crosstab(pattern, df["split"]).to_dict()
    return {
        str(split): {str(p): int(k) for p, k in counts.items() if k}
        for split, counts in patterns.items()
    }


__all__ = ["PATTERN_LEGEND", "assemble_dataset", "availability_counts", "cxr_vectors_by_stay",
           "prediction_times", "stay_vectors", "vector_column", "vector_dims", "vectors_by_stay"]
