"""Atomic writes and the content-addressed embedding cache (no models needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moe.embedding_cache import EmbeddingCache, make_model_key, sha256_text
from plumbing.atomic import atomic_dir, write_json_atomic, write_parquet_atomic, write_text_atomic


def test_atomic_parquet_and_json_leave_no_temp_files(tmp_path: Path) -> None:
    p = write_parquet_atomic(pd.DataFrame({"a": [1, 2]}), tmp_path / "x" / "t.parquet")
    assert pq.read_table(p).num_rows == 2
    j = write_json_atomic({"b": 1}, tmp_path / "x" / "m.json")
    assert json.loads(j.read_text()) == {"b": 1}
    assert sorted(f.name for f in (tmp_path / "x").iterdir()) == ["m.json", "t.parquet"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    p = write_parquet_atomic(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    with pytest.raises(Exception):  # noqa: B017 - any error from pyarrow
        write_parquet_atomic(pd.DataFrame({"a": [object()]}), p)
    assert pq.read_table(p).column("a").to_pylist() == [1]
    assert [f.name for f in tmp_path.iterdir()] == ["t.parquet"]


def test_atomic_dir_swaps_a_whole_folder_in(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    (target / "old").mkdir(parents=True)
    (target / "old" / "f.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".raw.") and not any(tmp.iterdir())
        (tmp / "sub").mkdir()
        write_text_atomic("new", tmp / "sub" / "f.txt")
        assert (target / "old" / "f.txt").read_text() == "old"  # unchanged until the end
    assert (target / "sub" / "f.txt").read_text() == "new" and not (target / "old").exists()
    assert [f.name for f in tmp_path.iterdir()] == ["raw"]  # neither temp nor old folder left


def test_atomic_dir_failure_keeps_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    target.mkdir()
    (target / "f.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "f.txt").read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["raw"]


def test_cache_roundtrip_dedupes_and_keeps_failures(tmp_path: Path) -> None:
    c = EmbeddingCache(tmp_path, "notes", "m-1", dim=3)
    c.put("b00", ["k1", "k2"], [np.ones(3), None], [True, False])
    c.put("b01", ["k1"], [np.zeros(3)])  # a concurrent duplicate: harmless
    assert c.keys() == {"k1", "k2"}
    got = c.lookup(["k1", "k2", "k3"])
    assert set(got) == {"k1", "k2"}
    assert got["k2"] == (False, None)
    assert got["k1"][0] and got["k1"][1] is not None and got["k1"][1].shape == (3,)
    assert len(c.shard_files()) == 2
    assert all(f.parent == tmp_path / "notes" / "m-1" for f in c.shard_files())


def test_cache_rejects_wrong_dim(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path, "cxr", "m", dim=4).put("p10", ["k"], [np.ones(3)])


def test_model_key_changes_with_model_revision_and_settings() -> None:
    base = make_model_key("org/model-a", "rev1", {"chunk_tokens": 254})
    assert base == make_model_key("org/model-a", "rev1", {"chunk_tokens": 254})
    assert base.startswith("model-a-")
    others = {
        make_model_key("org/model-b", "rev1", {"chunk_tokens": 254}),
        make_model_key("org/model-a", "rev2", {"chunk_tokens": 254}),
        make_model_key("org/model-a", "rev1", {"chunk_tokens": 128}),
    }
    assert base not in others and len(others) == 3
    assert sha256_text("a") != sha256_text("b")


def test_cache_lookup_reads_vectors_only_of_shards_with_a_wanted_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that looks up a few new keys does not read the whole cache's vectors (issue 14,
    incremental re-runs): a shard without a wanted key has only its `key` column read."""
    c = EmbeddingCache(tmp_path, "cxr", "m", dim=4)
    old = c.put("p10", [f"old{i}" for i in range(50)], [np.full(4, i, np.float32) for i in range(50)])
    new = c.put("p11", ["new0", "new1"], [np.ones(4), None], [True, False])
    assert old is not None and new is not None
    reads: list[tuple[str, tuple[str, ...]]] = []
    real_read_table, real_file = pq.read_table, pq.ParquetFile

    def spy_read_table(source, *a, columns=None, **kw):  # type: ignore[no-untyped-def]
        reads.append((Path(source).name, tuple(columns or ("*",))))
        return real_read_table(source, *a, columns=columns, **kw)

    class SpyFile(real_file):  # type: ignore[misc,valid-type]
        def __init__(self, source, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(source, *a, **kw)
            self.spy_name = Path(source).name

        def read(self, *a, columns=None, **kw):  # type: ignore[no-untyped-def]
            reads.append((self.spy_name, tuple(columns or ("*",))))
            return super().read(*a, columns=columns, **kw)

    monkeypatch.setattr(pq, "ParquetFile", SpyFile)
    monkeypatch.setattr(pq, "read_table", spy_read_table)
    got = c.lookup(["new0", "new1"])
    assert set(got) == {"new0", "new1"} and got["new1"] == (False, None)
    np.testing.assert_array_equal(got["new0"][1], np.ones(4, np.float32))
    vector_reads = [name for name, cols in reads if "vector" in cols or "*" in cols]
    assert vector_reads == [new.name], reads


def test_cache_lookup_vectors_are_the_stored_float32(tmp_path: Path) -> None:
    """The NumPy read of the vectors gives exactly the float32 values written, null rows
    (failures) in between included, across shards and with the first shard winning."""
    rng = np.random.default_rng(0)
    c = EmbeddingCache(tmp_path, "notes", "m", dim=7)
    keys = [f"k{i}" for i in range(40)]
    vecs = [None if i % 5 == 3 else rng.standard_normal(7).astype(np.float32) for i in range(40)]
    c.put("b00", keys[:25], vecs[:25])
    c.put("b01", keys[25:], vecs[25:])
    c.put("b02", keys[:3], [np.zeros(7)] * 3)  # later duplicates lose
    got = c.lookup([*keys, "absent"])
    assert set(got) == set(keys)
    for k, v in zip(keys, vecs, strict=True):
        ok, vec = got[k]
        if v is None:
            assert (ok, vec) == (False, None)
        else:
            assert ok and vec is not None and vec.dtype == np.float32
            np.testing.assert_array_equal(vec, v)


def _pool_reference(rows: pd.DataFrame, cache: EmbeddingCache, half_life: float) -> pa.Table:
    """pool_notes_per_stay as it was: a pandas group per stay (the exactness reference)."""
    from moe.dataset import vector_column
    from moe.text_encoder import recency_weighted_mean

    found = cache.lookup(rows["key"].dropna().unique().tolist())
    rows = rows[rows["key"].map(lambda k: k in found and found[k][0])]
    hours = (rows["prediction_time"] - rows["charttime"]).dt.total_seconds() / 3600
    rows = rows.assign(age_hours=hours)
    ids, ns, vecs = [], [], []
    for stay_id, g in rows.groupby("stay_id", sort=True):
        g = g.drop_duplicates("note_id")
        ids.append(int(stay_id))
        ns.append(len(g))
        v = np.stack([found[k][1] for k in g["key"]])
        vecs.append(recency_weighted_mean(v, g["age_hours"].to_numpy(), half_life))
    return pa.table({"stay_id": pa.array(ids, type=pa.int64()),
                     "n_notes": pa.array(ns, type=pa.int32()), "vector": vector_column(vecs)})  # fmt: skip


def test_note_pooling_is_bit_identical_to_a_group_per_stay(tmp_path: Path) -> None:
    """The stay vectors (the models' input, whose bytes decide whether heads refit) are the
    same bits as pooling one pandas group per stay: unsorted stays, a note listed twice, a
    failed note, a stay of 20 notes (numpy's pairwise sums start at 8)."""
    from moe.note_pooling import pool_notes_per_stay

    rng = np.random.default_rng(1)
    cache = EmbeddingCache(tmp_path, "notes", "m", dim=16)
    n = 400
    keys = [f"k{i}" for i in range(n)]
    cache.put("b00", keys, [None if i % 37 == 5 else rng.standard_normal(16) for i in range(n)])
    t0 = pd.Timestamp("2150-01-01")
    stays = np.r_[rng.integers(0, 120, n - 20), np.full(20, 999)]
    rows = pd.DataFrame({
        "stay_id": stays, "note_id": [f"n{i}" for i in range(n)], "key": keys,
        "charttime": t0 + pd.to_timedelta(rng.integers(0, 2000, n), unit="h"),
        "prediction_time": t0 + pd.Timedelta(hours=2500),
    })  # fmt: skip
    rows = pd.concat([rows, rows.iloc[[3, 50]]], ignore_index=True).sample(frac=1, random_state=0)
    got = pool_notes_per_stay(rows, cache, 720.0)
    want = _pool_reference(rows, cache, 720.0)
    assert got.num_rows == want.num_rows == len(set(stays))
    assert got.equals(want)
    assert pd.Series(got.column("stay_id").to_pylist()).is_monotonic_increasing
