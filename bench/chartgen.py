"""A fast writer of synthetic `chartevents.csv.gz` at millions of rows.

Vectorised numpy -> pyarrow table -> pyarrow CSV writer -> gzip stream (zlib level 6, like
PhysioNet's files), about a million rows per second. The rows look like MIMIC-IV's:
the same columns in the same order, grouped by stay and sorted by time within a stay,
8-digit ids, `YYYY-MM-DD HH:MM:SS` times, numeric and text values, and about 25% of rows
in the item ids of the cohort's chart variables (the share in real MIMIC-IV is similar
for vitals). Files are cached by (rows, seed, version) so repeated runs reuse them.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

VERSION = 1
COLUMNS = [
    "subject_id",
    "hadm_id",
    "stay_id",
    "caregiver_id",
    "charttime",
    "storetime",
    "itemid",
    "value",
    "valuenum",
    "valueuom",
    "warning",
]
# Chart item ids of the cohort spec (`sql/variables.csv` is read instead when present).
SPEC_CHART_ITEMIDS = [
    220045, 220179, 220050, 225309, 220180, 220051, 225310, 220181, 220052, 225312,
    220210, 224690, 223762, 223761, 220277, 225664, 220621, 226537,
]  # fmt: skip
_UNITS = np.array(["bpm", "mmHg", "insp/min", "°C", "°F", "%", "mg/dL", "", "mL", "cmH2O"])
_TEXT = np.array(
    [
        "Normal <3 secs", "Sinus Rhythm", "Regular", "Clear", "Diminished", "Warm", "Pink",
        "Oriented x3", "Moves all extremities", "Intact", "None", "Yes", "No", "Strong",
        "Brisk", "Absent", "Coarse", "Crackles", "Dry", "Moist",
    ]
)  # fmt: skip
CHUNK = 1_000_000


def variable_itemids(repo: Path | None = None) -> list[int]:
    """Chart item ids from the cohort engineer's `sql/variables.csv`, else from the spec."""
    import csv

    repo = repo or Path(__file__).resolve().parent.parent
    path = repo / "sql" / "variables.csv"
    if path.is_file():
        ids: list[int] = []
        with path.open() as f:
            for row in csv.DictReader(f):
                src = (row.get("source") or row.get("table") or "chart").strip().lower()
                raw = row.get("itemid") or row.get("itemids") or row.get("item_id") or ""
                if src.startswith("chart"):
                    ids += [int(x) for x in str(raw).replace(";", " ").replace(",", " ").split()]
        if ids:
            return sorted(set(ids))
    return sorted(SPEC_CHART_ITEMIDS)


def _chunk(rng: np.random.Generator, n: int, row0: int, var_ids: np.ndarray) -> pa.Table:
    rows_per_stay = 2000
    row = row0 + np.arange(n)
    stay_idx = row // rows_per_stay
    subject = 10_000_000 + (stay_idx * 7919) % 9_000_000
    hadm = 20_000_000 + (stay_idx * 104_729) % 9_000_000
    stay = 30_000_000 + (stay_idx * 15_485_863) % 9_000_000
    caregiver = 10_000 + ((row // 40) * 2_654_435_761) % 89_999  # one nurse per ~40 rows
    cg_mask = (row // 40) % 31 == 0
    # time: stay start + minute offsets within the stay (monotone over rows), storetime a
    # few minutes later
    base = np.datetime64("2110-01-01T00:00:00", "s") + (
        (stay_idx * 86_400 * 37) % (80 * 365 * 86_400)
    ).astype("timedelta64[s]")
    chart = base + ((row % rows_per_stay) // 4 * 300).astype("timedelta64[s]")
    store = chart + (rng.integers(0, 8, n) * 60).astype("timedelta64[s]")
    is_var = rng.random(n) < 0.25
    other_ids = np.setdiff1d(np.arange(220_000, 229_000, 17), var_ids)
    item_idx = rng.integers(0, 1 << 30, n)
    itemid = np.where(
        is_var, var_ids[item_idx % len(var_ids)], other_ids[item_idx % len(other_ids)]
    )
    numeric = is_var | (itemid % 3 != 0)
    mean = 40 + (itemid % 97) * 1.5
    valuenum = np.round(mean + rng.normal(0, 8, n), 1)
    valuenum = np.where(itemid % 5 == 0, valuenum, np.round(valuenum))
    text = pc.take(pa.array(_TEXT), pa.array(itemid % len(_TEXT)))
    num_str = pc.cast(pa.array(valuenum), pa.string())
    value = pc.if_else(pa.array(numeric), num_str, text)
    uom = pc.take(pa.array(_UNITS), pa.array(itemid % len(_UNITS)))
    warning = (rng.random(n) < 0.01).astype(np.int64)
    ts = pa.timestamp("s")
    return pa.table(
        {
            "subject_id": pa.array(subject, pa.int64()),
            "hadm_id": pa.array(hadm, pa.int64()),
            "stay_id": pa.array(stay, pa.int64()),
            "caregiver_id": pa.array(caregiver, pa.int64(), mask=cg_mask),
            "charttime": pc.cast(pa.array(chart, ts), pa.string()),
            "storetime": pc.cast(pa.array(store, ts), pa.string()),
            "itemid": pa.array(itemid, pa.int64()),
            "value": value,
            "valuenum": pa.array(valuenum, pa.float64(), mask=~numeric),
            "valueuom": pc.if_else(pa.array(numeric), uom, pa.scalar(None, pa.string())),
            "warning": pa.array(warning, pa.int64(), mask=~numeric),
        }
    )


def write_chartevents(
    path: Path, rows: int, seed: int = 0, itemids: Sequence[int] | None = None
) -> dict:
    """Write `rows` chartevents rows to `path` (gzip), atomically; return a summary."""
    var_ids = np.array(sorted(itemids or variable_itemids()), dtype=np.int64)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    n_var = 0
    try:
        with gzip.open(tmp, "wb", compresslevel=6) as sink:
            sink.write((",".join(COLUMNS) + "\n").encode())
            opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
            done = 0
            while done < rows:
                n = min(CHUNK, rows - done)
                table = _chunk(rng, n, done, var_ids)
                n_var += int(pc.sum(pc.is_in(table["itemid"], pa.array(var_ids))).as_py() or 0)
                buf = io.BytesIO()
                pacsv.write_csv(table, buf, opts)
                sink.write(buf.getbuffer())
                done += n
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"rows": rows, "variable_rows": n_var, "bytes": path.stat().st_size}


def cached_chartevents(
    workdir: Path, rows: int, seed: int = 0, itemids: Sequence[int] | None = None
) -> tuple[Path, dict]:
    """`<workdir>/chartevents_<rows>/icu/chartevents.csv.gz`, generated once per settings."""
    ids = sorted(itemids or variable_itemids())
    root = workdir / f"chartevents_{rows}"
    path = root / "icu" / "chartevents.csv.gz"
    meta = root / "meta.json"
    want = {"rows": rows, "seed": seed, "version": VERSION, "itemids": ids}
    if path.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("settings") == want:
            return path, info["summary"]
    summary = write_chartevents(path, rows, seed, ids)
    meta.write_text(json.dumps({"settings": want, "summary": summary}))
    return path, summary
