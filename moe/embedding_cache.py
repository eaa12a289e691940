"""Content-addressed embedding cache: append-only Parquet shards, one folder per model key.

Layout::

    <cache_dir>/<kind>/<model_key>/<shard>-<uuid>.parquet     columns: key, ok, vector

- `kind` is `notes` or `cxr`.
- `model_key` names everything that changes a vector besides the input: model name,
  model revision (a hash of its weights), preprocessing/chunking settings. A different
  model or setting therefore gets its own folder, and never reads another's vectors.
- `key` is the sha256 of the input content (note text, image file bytes). The full cache
  key is (`model_key`, `key`).
- Shard files are written atomically and never modified. Reading takes the union of
  all shards and keeps the first row per key, so two concurrent runs that embed the same
  input (e.g. two partitions of a backfill) are harmless.
- `ok` is false for inputs that could not be embedded (a JPG that fails to decode): they
  are cached too, so a corrupt file is not retried on every run unless its bytes change.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plumbing.atomic import write_parquet_atomic

__all__ = ["EmbeddingCache", "add_counts", "int_counts", "make_model_key", "per_second",
           "progress_logger", "sha256_bytes", "sha256_text"]


def add_counts(acc: MutableMapping[str, float], more: Mapping[str, float]) -> None:
    """Add each count of `more` (one shard's fill) into `acc` (the run's totals)."""
    for k, v in more.items():
        acc[k] = acc.get(k, 0) + v


def int_counts(counts: Mapping[str, float], *names: str) -> dict[str, int]:
    """`name -> count` as whole numbers for each of `names` (0 where absent)."""
    return {n: int(counts.get(n, 0)) for n in names}


def per_second(n: float, seconds: float) -> float:
    """`n / seconds` to 2 decimals; 0.0 when nothing was done or no time was measured."""
    return round(n / seconds, 2) if seconds > 0 and n else 0.0


def progress_logger(
    log: Callable[[str], None], what: str, every: int
) -> Callable[[int, int], None]:
    """A fill's `progress(done, total)` that calls `log("<what>: done/total")` every
    `every` steps and at the end."""
    every = max(1, every)

    def progress(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            log(f"{what}: {done}/{total}")

    return progress


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_model_key(model_name: str, revision: str, settings: dict[str, Any] | None = None) -> str:
    """A folder-safe key: readable slug of the model name + hash of (name, revision, settings)."""
    payload = json.dumps(
        {"model": model_name, "revision": revision, "settings": settings or {}},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.strip("/").split("/")[-1])[:48] or "model"
    return f"{slug}-{digest}"


def _vector_rows(column: pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(`n x dim` float32 rows, whether each row has a vector) of a fixed-size-list column."""
    arr = column.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, dim), np.float32), np.zeros(0, bool)
    values = arr.values.slice(arr.offset * dim, n * dim)  # a null row's slots are there too
    rows = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, dim)
    return rows, arr.is_valid().to_numpy(zero_copy_only=False)


class EmbeddingCache:
    """Vectors of one (kind, model_key), stored as append-only Parquet shards."""

    def __init__(self, cache_dir: str | Path, kind: str, model_key: str, dim: int) -> None:
        self.root = Path(cache_dir) / kind / model_key
        self.kind = kind
        self.model_key = model_key
        self.dim = int(dim)

    # -- reading -------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.glob("*.parquet") if not p.name.startswith("."))

    def keys(self) -> set[str]:
        """Every cached key (reads only the `key` column of each shard)."""
        out: set[str] = set()
        for f in self.shard_files():
            out.update(pq.read_table(f, columns=["key"]).column("key").to_pylist())
        return out

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[bool, np.ndarray | None]]:
        """`key -> (ok, vector or None)` for those of `keys` that are cached.

        Reads each shard's `key` column first and the vectors only of shards holding a
        wanted key (a run's new shards are few beside the cache), and turns the vectors into
        NumPy without going through Python floats (the same float32 values)."""
        wanted = set(keys)
        found: dict[str, tuple[bool, np.ndarray | None]] = {}
        if not wanted:
            return found
        value_set = pa.array(sorted(wanted), type=pa.string())
        for f in self.shard_files():
            shard = pq.ParquetFile(f)
            mask = pc.is_in(shard.read(columns=["key"]).column("key"), value_set=value_set)
            if not pc.any(mask).as_py():
                continue
            t = shard.read(columns=["key", "ok", "vector"]).filter(mask)
            ks = t.column("key").to_pylist()
            oks = t.column("ok").to_pylist()
            vecs, present = _vector_rows(t.column("vector"), self.dim)
            for i, (k, ok) in enumerate(zip(ks, oks, strict=True)):
                if k in found:  # duplicate from a concurrent run: first one wins
                    continue
                found[k] = (bool(ok), vecs[i] if (ok and present[i]) else None)
        return found

    # -- writing -------------------------------------------------------------------------
    def put(
        self,
        shard: str,
        keys: Sequence[str],
        vectors: Sequence[np.ndarray | None],
        oks: Sequence[bool] | None = None,
    ) -> Path | None:
        """Write one new shard file atomically; returns its path (None when nothing to write)."""
        if len(keys) == 0:
            return None
        if oks is None:
            oks = [v is not None for v in vectors]
        if not (len(keys) == len(vectors) == len(oks)):
            raise ValueError("keys, vectors and oks must have the same length")
        rows: list[list[float] | None] = []
        for v, ok in zip(vectors, oks, strict=True):
            if ok and v is not None:
                arr = np.asarray(v, dtype=np.float32).reshape(-1)
                if arr.shape[0] != self.dim:
                    raise ValueError(f"vector of dim {arr.shape[0]}, cache expects {self.dim}")
                rows.append(arr.tolist())
            else:
                rows.append(None)
        table = pa.table(
            {
                "key": pa.array(list(keys), type=pa.string()),
                "ok": pa.array([bool(o) for o in oks], type=pa.bool_()),
                "vector": pa.array(rows, type=pa.list_(pa.float32(), self.dim)),
            }
        )
        safe_shard = re.sub(r"[^A-Za-z0-9_-]+", "_", shard) or "shard"
        path = self.root / f"{safe_shard}-{uuid.uuid4().hex}.parquet"
        return write_parquet_atomic(table, path)
