"""Reuse a fit whose inputs, settings and code are those of the outputs already on disk.

Fitting on CPU is deterministic (fixed seeds, deterministic kernels), so refitting a head on
the same `multimodal_dataset.parquet` with the same settings and the same `moe/` code writes
the same files again. Before this, every materialization of the model, baseline and report
assets refitted: an unchanged re-run of the whole graph cost 36% of the first run. Now such
an asset checks a stamp (`fit_key.json`: a digest of its input files' bytes, its settings
and the `moe/` sources) beside its outputs and returns the recorded metadata instead.

- The stamp is removed before outputs are (re)written and written after the last one, so an
  interrupted fit never leaves a stamp over half-written outputs.
- Any change to an input file's bytes, a setting or a `.py` file under `moe/` refits.
- `force: true` in the asset's config refits regardless.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dagster import deserialize_value, serialize_value

STAMP = "fit_key.json"
_DIGESTS: dict[tuple[str, int, int], str] = {}


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
    """One digest of the input files (name and bytes), the settings and the code."""
    files = {str(p): (file_digest(p) if p.is_file() else None) for p in sorted(set(inputs))}
    blob = json.dumps(
        {"inputs": files, "settings": settings, "code": code_digest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def reusable(out_dir: Path, key: str, outputs: Iterable[str]) -> dict[str, Any] | None:
    """The metadata recorded with `key` when the stamp matches and every output exists."""
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
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{STAMP}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"key": key, "metadata": serialize_value(dict(metadata or {}))}))
    tmp.replace(out_dir / STAMP)
