"""EHR vectors (train-only statistics) and the multimodal dataset's shape (no models needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moe.dataset import assemble_dataset
from moe.ehr_vectors import build_ehr_vectors
from plumbing.settings import ProjectPaths


def _features(test_hr: float) -> tuple[pd.DataFrame, pd.Series]:
    feats = pd.DataFrame(
        {
            "stay_id": [1, 2, 3, 4],
            "age": [60.0, 70.0, 80.0, 90.0],
            "gender": ["M", "F", "M", "F"],
            "heart_rate_mean": [80.0, 100.0, None, test_hr],
            "heart_rate_last": [82.0, 98.0, None, test_hr],
            "heart_rate_count": [2, 4, None, 9],
        }
    )
    split = pd.Series({1: "train", 2: "train", 3: "val", 4: "test"})
    return feats, split


def test_train_only_standardisation_test_rows_do_not_move_train_vectors() -> None:
    a, std_a = build_ehr_vectors(*_features(test_hr=90.0))
    b, std_b = build_ehr_vectors(*_features(test_hr=250.0))
    assert std_a.means == std_b.means and std_a.stds == std_b.stds and std_a.n_train == 2
    for i in (0, 1, 2):  # train and val vectors identical whatever the test rows hold
        np.testing.assert_array_equal(a["vector"][i], b["vector"][i])
    names = std_a.feature_names
    hr = names.index("heart_rate_mean")
    assert std_a.means[hr] == 90.0 and std_a.stds[hr] == 10.0  # train rows only: 80, 100
    assert a["vector"][0][hr] == -1.0 and a["vector"][1][hr] == 1.0


def test_missing_values_imputed_with_train_mean_and_flagged() -> None:
    vecs, std = build_ehr_vectors(*_features(test_hr=90.0))
    names = std.feature_names
    v3 = vecs["vector"][2]  # val stay with no heart rate
    assert v3[names.index("heart_rate_mean")] == 0.0  # train mean after standardising
    assert v3[names.index("heart_rate_missing")] == 1.0
    assert vecs["vector"][0][names.index("heart_rate_missing")] == 0.0
    assert "gender_male" in names and "heart_rate_count_missing" not in names
    assert all(v.dtype == np.float32 and v.shape == (std.dim,) for v in vecs["vector"])
    assert all(np.isfinite(v).all() for v in vecs["vector"])


def _vec_table(ids: list[int], dim: int, extra: dict | None = None) -> pa.Table:
    cols = {
        "stay_id": pa.array(ids, type=pa.int64()),
        "vector": pa.array([[float(i)] * dim for i in ids], type=pa.list_(pa.float32())),
    }
    return pa.table({**cols, **(extra or {})})


def test_dataset_shapes_dtypes_and_missing_modalities(tmp_path: Path) -> None:
    paths = ProjectPaths(data_dir=tmp_path, mimic_root=None)
    pd.DataFrame(
        {
            "stay_id": [1, 2, 3],
            "split": ["train", "val", "test"],
            "mortality": pd.array([1, 0, None], dtype="Int8"),
            "long_los": pd.array([0, 1, 0], dtype="Int8"),
            "readmission": pd.array([None, 0, 1], dtype="Int8"),
            "has_ehr": [True, True, False],
            "has_notes": [True, False, True],
            "has_cxr": [True, True, False],
            "age": [50, 60, 70],
            "gender": ["F", "M", None],
        }
    ).to_parquet(paths.table("cohort"))
    pq.write_table(_vec_table([1, 2], 5), paths.table("ehr_vectors"))
    nt = _vec_table([1, 3], 4).append_column("n_notes", pa.array([1, 2], type=pa.int32()))
    pq.write_table(nt, paths.table("note_embeddings"))
    (tmp_path / "cxr_embeddings").mkdir()
    cxr = pa.table(
        {
            "stay_id": pa.array([1, 2], type=pa.int64()),
            "dicom_id": ["a", "b"],
            "ok": [True, False],  # stay 2's image failed to decode
            "vector": pa.array([[1.0] * 1024, None], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(cxr, tmp_path / "cxr_embeddings" / "p10.parquet")

    t = assemble_dataset(
        pd.read_parquet(paths.table("cohort")),
        paths.table("ehr_vectors"),
        paths.table("note_embeddings"),
        tmp_path / "cxr_embeddings",
    )
    assert t.column_names == [
        "stay_id", "split", "mortality", "long_los", "readmission", "has_ehr", "has_notes",
        "has_cxr", "ehr", "notes", "cxr", "age", "gender",
    ]  # fmt: skip
    schema = t.schema
    assert schema.field("stay_id").type == pa.int64()
    assert schema.field("mortality").type == pa.int8()
    for c in ("has_ehr", "has_notes", "has_cxr"):
        assert schema.field(c).type == pa.bool_()
    for c in ("ehr", "notes", "cxr"):
        assert schema.field(c).type == pa.list_(pa.float32())
    rows = t.to_pylist()
    assert [r["has_cxr"] for r in rows] == [True, False, False]
    assert rows[1]["cxr"] is None
    assert [r["has_ehr"] for r in rows] == [True, True, False] and rows[2]["ehr"] is None
    assert [r["has_notes"] for r in rows] == [True, False, True]
    assert len(rows[0]["ehr"]) == 5 and len(rows[2]["notes"]) == 4 and len(rows[0]["cxr"]) == 1024
    assert rows[2]["mortality"] is None and rows[0]["readmission"] is None
    assert rows[2]["gender"] is None and rows[0]["age"] == 50.0
