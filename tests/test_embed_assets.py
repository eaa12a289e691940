"""Embedding assets end to end on a hand-made world of 4 stays, 4 notes and 3 images."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import materialize
from PIL import Image

from assets.embeddings import (
    cxr_embedding_cache,
    cxr_embeddings,
    ehr_vectors,
    multimodal_dataset,
    note_embedding_cache,
    note_embeddings,
)
from moe.note_pooling import note_bucket
from plumbing.resources import ProjectResource

T0 = pd.Timestamp("2150-01-03 00:00:00")
TEXT = {
    "n1": "Prior discharge summary: COPD exacerbation, treated with steroids.",
    "n2": "LEAK charttime at t0: large right pneumothorax.",
    "n3": "Portable chest film: mild pulmonary edema.",
    "n4": "LEAK stored after t0: new consolidation.",
}
RUN_CONFIG: dict[str, Any] = {
    "ops": {
        "cxr_embeddings": {"config": {"num_workers": 0, "batch_size": 4, "device": "cpu"}},
        "note_embeddings": {"config": {"batch_size": 8, "device": "cpu"}},
    }
}


def _jpg(seed: int) -> bytes:
    buf = io.BytesIO()
    arr = (np.random.default_rng(seed).random((64, 64)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def make_world(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    raw = data / "demo" / "raw"  # the demo profile's raw root
    data.mkdir(parents=True)
    stays = [1, 2, 3, 4]
    pd.DataFrame(
        {
            "stay_id": stays,
            "subject_id": [10000001, 11000002, 12000003, 13000004],
            "hadm_id": [21, 22, 23, 24],
            "intime": [T0 - pd.Timedelta(hours=48)] * 4,
            "prediction_time": [T0] * 4,
            "age": [70, 55, 80, 40],
            "gender": ["M", "F", "F", "M"],
            "split": ["train", "train", "val", "test"],
            "mortality": pd.array([1, 0, 0, 0], dtype="Int8"),
            "long_los": pd.array([0, 1, 0, 0], dtype="Int8"),
            "readmission": pd.array([None, 0, 1, 0], dtype="Int8"),
            "has_ehr": [True, True, True, False],
            "has_notes": [True, True, True, False],
            "has_cxr": [True, True, True, False],
            "cxr_dicom_id": ["d1", "d2", "d3", None],
        }
    ).to_parquet(data / "cohort.parquet")
    pd.DataFrame(
        {
            "stay_id": [1, 2, 3],
            "age": [70, 55, 80],
            "gender": ["M", "F", "F"],
            "heart_rate_mean": [80.0, 100.0, None],
            "heart_rate_count": [3, 5, 0],
        }
    ).to_parquet(data / "ehr_features.parquet")
    pd.DataFrame(
        {
            "stay_id": [1, 1, 2, 3],
            "note_id": ["n1", "n2", "n3", "n4"],
            "note_type": ["DS", "RR", "RR", "RR"],
            "charttime": [
                T0 - pd.Timedelta(days=200),
                T0,  # at t0: must not be used
                T0 - pd.Timedelta(hours=5),
                T0 - pd.Timedelta(hours=1),  # stored after t0: must not be used
            ],
        }
    ).to_parquet(data / "cohort_notes.parquet")
    pd.DataFrame(
        {"note_id": ["n1"], "storetime": [T0 - pd.Timedelta(days=199)], "text": [TEXT["n1"]]}
    ).to_parquet(data / "staged_discharge.parquet")
    pd.DataFrame(
        {
            "note_id": ["n2", "n3", "n4"],
            "storetime": [T0, T0 - pd.Timedelta(hours=4), T0 + pd.Timedelta(hours=2)],
            "text": [TEXT["n2"], TEXT["n3"], TEXT["n4"]],
        }
    ).to_parquet(data / "staged_radiology.parquet")
    rel = {
        "d1": "files/p10/p10000001/s1/d1.jpg",
        "d2": "files/p11/p11000002/s2/d2.jpg",
        "d3": "files/p12/p12000003/s3/d3.jpg",
    }
    content = {"d1": _jpg(1), "d2": _jpg(2)[:150], "d3": _jpg(3)}  # d2 is truncated
    for d, r in rel.items():
        f = raw / "cxr" / r
        f.parent.mkdir(parents=True)
        f.write_bytes(content[d])
    pd.DataFrame(
        {
            "stay_id": [1, 2, 3],
            "dicom_id": ["d1", "d2", "d3"],
            "study_id": [1, 2, 3],
            "study_time": [
                T0 - pd.Timedelta(hours=3),
                T0 - pd.Timedelta(hours=2),
                T0 + pd.Timedelta(minutes=1),  # after t0: must not be used
            ],
            "path": [rel["d1"], rel["d2"], rel["d3"]],
        }
    ).to_parquet(data / "cohort_cxr.parquet")
    return data, raw


def _meta(result: Any, name: str) -> dict[str, Any]:
    mat = result.asset_materializations_for_node(name)[0]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def first_run(world: tuple[Path, Path]) -> Any:
    data, raw = world
    res = materialize(
        [note_embeddings, cxr_embeddings, ehr_vectors, multimodal_dataset],
        resources={"project": ProjectResource(data_dir=str(data))},
        run_config=RUN_CONFIG,
    )
    assert res.success
    return res


def test_note_embeddings_leak_free_and_pooled(world: tuple[Path, Path], first_run: Any) -> None:
    data, _ = world
    m = _meta(first_run, "note_embeddings")
    assert m["notes_embedded_now"] == 2 and m["cache_hits"] == 0
    assert m["notes_dropped_at_or_after_t0"] == 2
    assert m["model"] == "sentence-transformers/all-MiniLM-L6-v2" and m["rate_notes_per_s"] > 0
    t = pq.read_table(data / "note_embeddings.parquet").to_pandas()
    assert t["stay_id"].tolist() == [1, 2] and t["n_notes"].tolist() == [1, 1]
    # stay 1's vector is exactly its one eligible note: the note at t0 did not reach it
    from moe.text_encoder import TextEncoder

    expected = TextEncoder(device="cpu").embed_notes([TEXT["n1"]])[0]
    np.testing.assert_allclose(np.asarray(t["vector"][0]), expected, atol=1e-5)
    assert not any(str(v).find(TEXT["n2"][:10]) >= 0 for v in m.values())  # no text in metadata


def test_cxr_corrupt_jpg_is_missing_and_counted(world: tuple[Path, Path], first_run: Any) -> None:
    data, _ = world
    m = _meta(first_run, "cxr_embeddings")
    assert m["decode_failures"] == 1 and m["images_embedded_now"] == 1
    assert m["images_dropped_at_or_after_t0"] == 1
    assert m["cxr_weights"].startswith("random (NOT pretrained")
    files = sorted(p.name for p in (data / "cxr_embeddings").glob("*.parquet"))
    assert files == ["p10.parquet", "p11.parquet"]  # p12's only image was after t0
    p11 = pq.read_table(data / "cxr_embeddings" / "p11.parquet").to_pylist()
    assert p11 == [{"stay_id": 2, "dicom_id": "d2", "ok": False, "vector": None}]
    p10 = pq.read_table(data / "cxr_embeddings" / "p10.parquet").to_pylist()
    assert p10[0]["ok"] and len(p10[0]["vector"]) == 1024


def test_dataset_rows_flags_and_dims(world: tuple[Path, Path], first_run: Any) -> None:
    data, _ = world
    m = _meta(first_run, "multimodal_dataset")
    assert m["dims"]["cxr"] == 1024 and m["dims"]["notes"] == 384 and m["dims"]["ehr"] > 0
    df = pq.read_table(data / "multimodal_dataset.parquet").to_pandas()
    assert df["stay_id"].tolist() == [1, 2, 3, 4]
    assert df["has_cxr"].tolist() == [True, False, False, False]  # d2 corrupt, d3 after t0
    assert df["has_notes"].tolist() == [True, True, False, False]  # n4 stored after t0
    assert df["has_ehr"].tolist() == [True, True, True, False]
    assert df["cxr"].isna().tolist() == [False, True, True, True]
    assert m["availability_patterns_per_split"]["train"] == {"ENX": 1, "EN-": 1}


def test_unchanged_rerun_embeds_nothing(world: tuple[Path, Path], first_run: Any) -> None:
    data, _ = world
    res = materialize(
        [note_embeddings, cxr_embeddings],
        resources={"project": ProjectResource(data_dir=str(data))},
        run_config=RUN_CONFIG,
    )
    n, c = _meta(res, "note_embeddings"), _meta(res, "cxr_embeddings")
    assert n["notes_embedded_now"] == 0 and n["cache_hits"] == 2
    assert c["images_embedded_now"] == 0 and c["cache_hits"] == 2
    assert c["decode_failures"] == 1  # still counted, from the cache, not retried


def test_real_data_refuses_random_cxr_weights(world: tuple[Path, Path], tmp_path: Path) -> None:
    demo, raw = world
    data = tmp_path / "data"  # the world's folder is recorded as built from the demo
    shutil.copytree(demo, data, ignore=shutil.ignore_patterns("source.json"))
    res = materialize(
        [cxr_embeddings],
        resources={"project": ProjectResource(data_dir=str(data), mimic_root=str(raw))},
        run_config={"ops": {"cxr_embeddings": RUN_CONFIG["ops"]["cxr_embeddings"]}},
        raise_on_error=False,
    )
    assert not res.success
    msg = str(res.all_events)
    assert "densenet121-res224-all" in msg and "allow_random_weights" in msg


@pytest.mark.slow
def test_partitioned_backfill_fills_the_cache_the_asset_uses(tmp_path: Path) -> None:
    data, _ = make_world(tmp_path)
    project = ProjectResource(data_dir=str(data))
    cfg = {"ops": {"cxr_embedding_cache": RUN_CONFIG["ops"]["cxr_embeddings"]}}
    for part in ("p10", "p11"):
        r = materialize(
            [cxr_embedding_cache],
            partition_key=part,
            resources={"project": project},
            run_config=cfg,
        )
        assert r.success
    bucket = note_bucket("n3")
    ncfg = {"ops": {"note_embedding_cache": RUN_CONFIG["ops"]["note_embeddings"]}}
    r = materialize(
        [note_embedding_cache],
        partition_key=bucket,
        resources={"project": project},
        run_config=ncfg,
    )
    assert _meta(r, "note_embedding_cache")["notes_embedded_now"] == 1
    res = materialize(
        [cxr_embeddings, note_embeddings], resources={"project": project}, run_config=RUN_CONFIG
    )
    c, n = _meta(res, "cxr_embeddings"), _meta(res, "note_embeddings")
    assert c["images_embedded_now"] == 0 and c["cache_hits"] == 2 and c["decode_failures"] == 1
    assert n["notes_embedded_now"] == (0 if note_bucket("n1") == bucket else 1)
