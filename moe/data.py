"""`multimodal_dataset`-shaped tables -> numpy arrays the models train on.

A table (pyarrow Table or pandas DataFrame) has one row per ICU stay with `stay_id`,
`split`, the label columns, `has_<mod>` flags and one fixed-length float vector column per
modality (`ehr`, `notes`, `cxr`; null where missing). A modality counts as available for a
row only when its flag is true *and* its vector is present, so hiding a modality for a row
(as the robustness curves do) is just `has_<mod> = False` or a null vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from plumbing.tasks import TASK_NAMES

MODALITIES: tuple[str, ...] = ("ehr", "notes", "cxr")
TASKS: tuple[str, ...] = TASK_NAMES  # the task registry (plumbing/tasks.py)
SHORT = {"ehr": "E", "notes": "N", "cxr": "C"}

Table: TypeAlias = pa.Table | pd.DataFrame
# Which rows to hide a modality for at prediction time: a modality name, several names
# (hide for every row), or {modality: boolean row mask}.
Drop: TypeAlias = str | Sequence[str] | Mapping[str, np.ndarray] | None


@dataclass
class Arrays:
    """Numeric view of a table. `x[m]` is (n, dims[m]) float32, zeros where `mask[:, j]` is
    False (the models never read those zeros as data); `y` is float with NaN for null labels."""

    stay_id: np.ndarray
    split: np.ndarray
    x: dict[str, np.ndarray]
    mask: np.ndarray  # (n, 3) bool, column order MODALITIES
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.split)

    def subset(self, rows: np.ndarray) -> Arrays:
        return Arrays(
            stay_id=self.stay_id[rows],
            split=self.split[rows],
            x={m: v[rows] for m, v in self.x.items()},
            mask=self.mask[rows],
            y=None if self.y is None else self.y[rows],
        )

    def dims(self) -> dict[str, int]:
        return {m: int(v.shape[1]) for m, v in self.x.items()}


def to_arrow(table: Table) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise TypeError(f"expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")


def _vectors(col: pa.ChunkedArray | None, n: int, dim: int | None, name: str):
    """(values (n, d) float32 with zeros where null, present (n,) bool)."""
    if col is None:
        return np.zeros((n, dim or 1), np.float32), np.zeros(n, bool)
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_null(arr.type):
        return np.zeros((n, dim or 1), np.float32), np.zeros(n, bool)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)):
        raise TypeError(f"column {name!r} must hold float lists, got {arr.type}")
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    lengths = np.asarray(lengths, float)[present]
    if present.any():
        d = int(lengths[0])
        if (lengths != d).any():
            raise ValueError(f"column {name!r} holds vectors of different lengths")
        if dim is not None and d != dim:
            raise ValueError(f"column {name!r} has vectors of length {d}; the model expects {dim}")
    else:
        d = dim or 1
    flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), np.float32)
    out = np.zeros((n, d), np.float32)
    if present.any():
        out[present] = np.nan_to_num(flat.reshape(-1, d), nan=0.0, posinf=0.0, neginf=0.0)
    return out, present


def extract(
    table: Table,
    task: str | None = None,
    dims: Mapping[str, int] | None = None,
    drop: Drop = None,
) -> Arrays:
    """Read a table into `Arrays`. `dims` (from a fitted model) pins the vector lengths, so a
    modality absent from the table is all-missing; `drop` hides modalities (see `Drop`)."""
    t = to_arrow(table)
    n = t.num_rows
    names = set(t.column_names)
    if dims is None and not names & set(MODALITIES):
        # a model fitted on such a table would see nothing but the availability pattern
        raise KeyError(
            f"table has none of the vector columns {list(MODALITIES)} (one list of floats per "
            "stay, null where the stay lacks the modality; `multimodal_dataset` has them)"
        )
    split = (
        np.asarray(t.column("split").to_pylist(), dtype=object)
        if "split" in names
        else np.full(n, "test", dtype=object)
    )
    stay_id = (
        np.asarray(t.column("stay_id").to_numpy(zero_copy_only=False))
        if "stay_id" in names
        else np.arange(n)
    )
    xs: dict[str, np.ndarray] = {}
    mask = np.zeros((n, len(MODALITIES)), bool)
    for j, m in enumerate(MODALITIES):
        v, present = _vectors(t.column(m) if m in names else None, n, (dims or {}).get(m), m)
        flag = present.copy()
        if f"has_{m}" in names:
            has = t.column(f"has_{m}").to_numpy(zero_copy_only=False)
            flag &= np.asarray(pd.Series(has).fillna(False).astype(bool).to_numpy())
        v[~flag] = 0.0
        xs[m] = v
        mask[:, j] = flag
    if drop is not None:
        hide = _drop_rows(drop, n)
        for j, m in enumerate(MODALITIES):
            if m in hide:
                mask[:, j] &= ~hide[m]
                xs[m][hide[m]] = 0.0
    y = None
    if task is not None:
        if task not in names:
            raise KeyError(f"table has no label column {task!r}")
        y = np.asarray(
            pd.array(t.column(task).to_pylist(), dtype="Float64").to_numpy(
                dtype=float, na_value=np.nan
            )
        )
    return Arrays(stay_id=stay_id, split=split, x=xs, mask=mask, y=y)


def _drop_rows(drop: Drop, n: int) -> dict[str, np.ndarray]:
    if drop is None:
        return {}
    if isinstance(drop, str):
        drop = [drop]
    if isinstance(drop, Mapping):
        out = {m: np.asarray(r, bool) for m, r in drop.items()}
    else:
        out = {m: np.ones(n, bool) for m in drop}
    for m, r in out.items():
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected one of {MODALITIES}")
        if r.shape != (n,):
            raise ValueError(f"drop mask for {m!r} must have shape ({n},)")
    return out


def pattern_labels(mask: np.ndarray) -> np.ndarray:
    """Availability pattern per row as a short label: 'E+N+C', 'E', ..., 'none'."""
    out = []
    for row in np.asarray(mask, bool):
        parts = [SHORT[m] for m, on in zip(MODALITIES, row, strict=True) if on]
        out.append("+".join(parts) if parts else "none")
    return np.asarray(out, dtype=object)
