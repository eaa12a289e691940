"""Reuse an output whose inputs, settings and code are those it was made from.

One mechanism for every asset that writes files: a *key* (`combine(...)`, a digest of what the
output was made from) is kept with the output, and a re-run whose key matches reuses the
output and the metadata recorded with it instead of recomputing.

Where the key is kept:
- one Parquet file (the staged and cohort tables of `sql/`): in the file's key-value
  metadata (`moe_fingerprint`, the build's counts under `moe_stats`), written in the same
  atomic write as the rows (`parquet_metadata`, `reusable_parquet`);
- a folder of outputs (`models/<task>/`, `reports/`): a visible stamp file `fit_key.json`
  beside them (`reusable`, `invalidate`, `record`). The stamp is removed before the outputs
  are rewritten and written after the last one, so an interrupted fit never leaves a stamp
  over half-written outputs. (Hidden names under the data folder are atomic-write temp
  files, which the fault tests must not find.)

What goes into a key: raw files by identity (`file_identity`: path, size, modification
time, like make: they are gigabytes), our own outputs by their recorded key, small files by
their bytes (`file_digest`), the code by a hash of its sources (`code_digest` for `moe/`;
the SQL files' hash for `sql/`), and the settings. Fitting on CPU is deterministic (fixed
seeds, deterministic kernels), so a refit on the same key would write the same files.
`force: true` in an asset's config recomputes regardless.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from plumbing.atomic import write_json_atomic

STAMP = "fit_key.json"
PARQUET_KEY = "moe_fingerprint"
PARQUET_STATS = "moe_stats"
_DIGESTS: dict[tuple[str, int, int], str] = {}


def combine(*parts: object) -> str:
    """Digest of several JSON-able parts (code hash, settings, input keys), order-sensitive."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode() + b"\0")
    return h.hexdigest()[:16]


def file_identity(paths: Iterable[Path | None]) -> str:
    """Cheap identity of (large) files: resolved path, size and modification time."""
    h = hashlib.sha256()
    for p in paths:
        if p is None:
            h.update(b"<absent>\0")
            continue
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


@functools.cache
def code_digest() -> str:
    """Digest of the `moe` package's sources: a change to the model code refits. Once per
    process: every step runs in a fresh process, which sees the code it runs."""
    import importlib.util

    spec = importlib.util.find_spec("moe")  # located, not imported (torch is slow to import)
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def fit_key(inputs: Iterable[Path], settings: Mapping[str, Any]) -> str:
    """The key of a fit: its input files (name and bytes), its settings and the `moe` code."""
    files = {str(p): (file_digest(p) if p.is_file() else None) for p in sorted(set(inputs))}
    return combine({"inputs": files, "settings": settings, "code": code_digest()})


# --------------------------------------------------------------------------- one Parquet file


def parquet_metadata(fingerprint: str, stats: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The key-value metadata that makes a Parquet file reusable: its key and its counts."""
    return {
        PARQUET_KEY: fingerprint,
        PARQUET_STATS: json.dumps(dict(stats or {}), sort_keys=True, default=str),
    }


def _parquet_kv(path: Path) -> dict[bytes, bytes]:
    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return {}


def parquet_key(path: Path) -> str | None:
    """The key a Parquet output was written with; None when absent or not ours."""
    value = _parquet_kv(path).get(PARQUET_KEY.encode())
    return value.decode() if value else None


def parquet_stats(path: Path) -> dict[str, Any]:
    raw = _parquet_kv(path).get(PARQUET_STATS.encode())
    return json.loads(raw) if raw else {}


def reusable_parquet(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The counts recorded with `fingerprint` when `path` was written with it."""
    if path.is_file() and parquet_key(path) == fingerprint:
        return parquet_stats(path)
    return None


# --------------------------------------------------------------------------- a folder


def reusable(out_dir: Path, key: str, outputs: Iterable[str]) -> dict[str, Any] | None:
    """The metadata recorded with `key` when the stamp matches and every output exists."""
    from dagster import deserialize_value  # Dagster metadata values; sql/ never gets here

    stamp = out_dir / STAMP
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key or not all((out_dir / o).is_file() for o in outputs):
        return None
    try:
        meta = deserialize_value(saved.get("metadata", "{}"))
    except Exception:  # noqa: BLE001 - a stamp from another Dagster version: just refit
        return None
    return dict(meta) if isinstance(meta, dict) else None


def invalidate(out_dir: Path) -> None:
    """Remove the stamp before outputs are rewritten."""
    (out_dir / STAMP).unlink(missing_ok=True)


def record(out_dir: Path, key: str, metadata: Mapping[str, Any] | None = None) -> None:
    """Write the stamp (atomically) after the last output is in place."""
    from dagster import serialize_value

    write_json_atomic(
        {"key": key, "metadata": serialize_value(dict(metadata or {}))},
        out_dir / STAMP,
        indent=None,
    )
