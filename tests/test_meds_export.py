"""MEDS export (assets/export.py, sql/export/): exact rows on hand-built stays, nothing at or
after t0, and every file valid under the `meds` package's own schemas."""

from __future__ import annotations

import json
from pathlib import Path

import meds
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from assets.export import meds_events, meds_events_no_event_at_or_after_t0, meds_labels
from plumbing.data_dir import record_source
from plumbing.resources import DuckDBSettings, ProjectResource
from plumbing.tasks import TASK_NAMES
from sql.export.meds import (
    build_meds_events,
    build_meds_labels,
    count_events_not_before_t0,
    event_files,
    label_file,
)

SETTINGS = {"memory_limit": "1GB", "threads": 1}
H = pd.Timedelta(hours=1)
S = pd.Timedelta(seconds=1)
# subject 1: one stay; subject 2: two stays (two admissions) in different windows
IN1 = pd.Timestamp("2150-01-01 08:00:00")
IN2A = pd.Timestamp("2151-03-01 00:00:00")
IN2B = pd.Timestamp("2151-06-01 00:00:00")
T1, T2A, T2B = IN1 + 48 * H, IN2A + 48 * H, IN2B + 48 * H


def _world(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    (data / ".duckdb_tmp").mkdir()
    record_source(data, {"source": "demo"})  # the assets run in the demo profile
    pd.DataFrame(
        {
            "stay_id": [10, 20, 21],
            "subject_id": [1, 2, 2],
            "hadm_id": [100, 200, 201],
            "intime": [IN1, IN2A, IN2B],
            "prediction_time": [T1, T2A, T2B],
            "split": ["train", "test", "test"],
            "mortality": pd.array([0, 0, 1], dtype="Int8"),
            "long_los": pd.array([1, 0, 0], dtype="Int8"),
            "readmission": pd.array([0, 1, None], dtype="Int8"),
        }
    ).to_parquet(data / "cohort.parquet")
    pd.DataFrame(
        {"subject_id": [1, 2, 3], "gender": ["F", "M", "F"], "anchor_age": [60, 45, 30],
         "anchor_year": [2150, 2151, 2150]}
    ).to_parquet(data / "staged_patients.parquet")  # fmt: skip
    chart = [  # stay_id, subject_id, itemid, charttime, valuenum
        (10, 1, 220045, IN1 - 6 * H - S, 70.0),  # before the window: out
        (10, 1, 220045, IN1 - 6 * H, 71.0),  # window start: in
        (10, 1, 220045, T1 - 2 * H, 500.0),  # implausible: out (as in the features)
        (10, 1, 223761, T1 - 2 * H, 98.6),  # °F: in, as 37 °C
        (10, 1, 220045, T1 - S, 72.0),  # one second before t0: in
        (10, 1, 220045, T1, 73.0),  # at t0: out
        (10, 1, 220045, T1 + H, 74.0),  # after t0: out
        (20, 2, 220045, T2A - H, 80.0),  # in
        (20, 2, 220045, T2A + H, 81.0),  # after stay 20's t0, before stay 21: out
        (21, 2, 220045, T2B - H, 82.0),  # in
        (21, 2, 220045, T2B, 83.0),  # at t0: out
    ]
    pd.DataFrame(
        chart, columns=["stay_id", "subject_id", "itemid", "charttime", "valuenum"]
    ).to_parquet(data / "staged_chartevents.parquet")
    labs = [  # subject_id, itemid, charttime, valuenum
        (1, 50912, T1 - H, 1.2),  # in
        (1, 50912, T1, 1.3),  # at t0: out
        (2, 50912, T2A + 30 * 24 * H, 2.0),  # between the two stays' windows: out
        (2, 50983, T2B - 3 * H, 140.0),  # in (stay 21)
        (3, 50912, T1 - H, 9.9),  # subject not in the cohort: out
    ]
    pd.DataFrame(labs, columns=["subject_id", "itemid", "charttime", "valuenum"]).to_parquet(
        data / "staged_labevents.parquet"
    )
    return data


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return _world(tmp_path)


def _events(data: Path) -> dict[str, list[tuple]]:
    out = {}
    for f in event_files(data / "meds"):
        t = pq.read_table(f).to_pandas()
        out[f.parent.name] = [
            (int(r.subject_id), None if pd.isna(r.time) else r.time, r.code,
             None if pd.isna(r.numeric_value) else round(float(r.numeric_value), 4))
            for r in t.itertuples()
        ]  # fmt: skip
    return out


def test_events_are_exactly_the_windows_values_before_t0(data: Path) -> None:
    stats = build_meds_events(data, {**SETTINGS, "temp_directory": str(data / ".duckdb_tmp")})
    birth1, birth2 = pd.Timestamp("2090-01-01"), pd.Timestamp("2106-01-01")
    assert _events(data) == {
        "train": [
            (1, None, "GENDER//F", None),
            (1, birth1, "MEDS_BIRTH", None),
            (1, IN1 - 6 * H, "CHART//220045", 71.0),
            (1, T1 - 2 * H, "CHART//223761", 37.0),
            (1, T1 - H, "LAB//50912//mg/dL", 1.2),
            (1, T1 - S, "CHART//220045", 72.0),
        ],
        "tuning": [],
        "held_out": [
            (2, None, "GENDER//M", None),
            (2, birth2, "MEDS_BIRTH", None),
            (2, T2A - H, "CHART//220045", 80.0),
            (2, T2B - 3 * H, "LAB//50983//mEq/L", 140.0),
            (2, T2B - H, "CHART//220045", 82.0),
        ],
    }
    assert stats["events"] == 11 and stats["static_events"] == 2 and stats["subjects"] == 2
    t0 = {1: T1, 2: T2B}
    for rows in _events(data).values():
        assert all(time is None or time < t0[s] for s, time, _, _ in rows)
    assert count_events_not_before_t0(data, {**SETTINGS, "temp_directory": str(data)}) == 0


def test_leak_check_counts_an_event_at_t0(data: Path) -> None:
    settings = {**SETTINGS, "temp_directory": str(data / ".duckdb_tmp")}
    build_meds_events(data, settings)
    f = data / "meds" / "data" / "train" / "0.parquet"
    t = pq.read_table(f)
    extra = pa.table(
        {"subject_id": [1, 1], "time": [T1, T1 + H], "code": ["CHART//220045"] * 2,
         "numeric_value": pa.array([73.0, 74.0], type=pa.float32())},
        schema=t.schema,
    )  # fmt: skip
    pq.write_table(pa.concat_tables([t, extra]), f)
    assert count_events_not_before_t0(data, settings) == 2


def test_labels_and_splits_exact(data: Path) -> None:
    settings = {**SETTINGS, "temp_directory": str(data / ".duckdb_tmp")}
    stats = build_meds_labels(data, settings, ["mortality", "readmission"])
    rows = {
        task: [tuple(r) for r in pq.read_table(label_file(data / "meds", task)).to_pylist()
               for r in [r.values()]]
        for task in ("mortality", "readmission")
    }  # fmt: skip
    assert rows == {
        "mortality": [(1, T1, False), (2, T2A, False), (2, T2B, True)],
        "readmission": [(1, T1, False), (2, T2A, True)],  # null label: left out
    }
    assert stats["labels"] == {"mortality": 3, "readmission": 2}
    splits = pq.read_table(data / "meds" / "metadata" / "subject_splits.parquet").to_pylist()
    assert splits == [{"subject_id": 1, "split": "train"}, {"subject_id": 2, "split": "held_out"}]


def test_export_validates_against_the_meds_schemas(data: Path) -> None:
    res = materialize(
        [meds_events, meds_labels, meds_events_no_event_at_or_after_t0],
        resources={
            "project": ProjectResource(data_dir=str(data)),
            "duckdb": DuckDBSettings(memory_limit="1GB", threads=1),
        },
    )
    assert res.success
    checks = res.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    root = data / "meds"
    for f in event_files(root):
        table = pq.read_table(f)
        meds.DataSchema.validate(table)  # raises on a missing or mistyped column, or a null id
        assert table.schema.field("time").type == pa.timestamp("us")
        assert table.schema.field("numeric_value").type == pa.float32()
    for task in TASK_NAMES:  # the task registry's tasks, each one label file
        meds.LabelSchema.validate(pq.read_table(label_file(root, task)))
    meds.SubjectSplitSchema.validate(pq.read_table(root / meds.subject_splits_filepath))
    meds.CodeMetadataSchema.validate(pq.read_table(root / meds.code_metadata_filepath))
    meta = json.loads((root / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(meta)
    assert meta["etl_name"] == "moe-health"
    codes = set(pq.read_table(root / meds.code_metadata_filepath).column("code").to_pylist())
    used = {c for f in event_files(root) for c in pq.read_table(f).column("code").to_pylist()}
    assert used - codes == {"GENDER//F", "GENDER//M", "MEDS_BIRTH"}


def test_schema_validation_rejects_a_wrong_table() -> None:
    """The validation above can fail: a float64 value column or an extra label column."""
    bad = pa.table({"subject_id": [1], "time": pa.array([None], pa.timestamp("us")),
                    "code": ["X"], "numeric_value": pa.array([1.0], pa.float64())})  # fmt: skip
    with pytest.raises(Exception, match="(?i)valid|type"):
        meds.DataSchema.validate(bad)
    bad_label = pa.table(
        {"subject_id": [1], "prediction_time": pa.array([T1], pa.timestamp("us")),
         "boolean_value": [True], "stay_id": [10]}
    )  # fmt: skip
    with pytest.raises(Exception, match="(?i)valid|extra"):
        meds.LabelSchema.validate(bad_label)
