"""Chest X-rays -> one image per stay: eligibility before t0, pNN folders, cache fill, choice.

    images, counts = eligible_images(cohort_cxr, cohort)            # adds `shard` (pNN folder)
    counts, per_folder = embed_images_per_stay(encoder, cache, cxr_root, images, out_dir)
    # writes out_dir/pNN.parquet: stay_id, dicom_id, ok, vector; fill_cxr_shard: one folder
    stays_summary(encoder, counts, dropped, per_folder)  # what the run did: counts only

`ImageWork` bundles one run's settings, encoder, cache, image root and eligible images,
and runs the above with them (what the X-ray assets do).

Work runs by MIMIC-CXR top folder (`files/pNN/...`, `cxr_folder`), so a killed run redoes
only the folder in flight. Leak guard: an image whose `study_time` is at or after the
stay's prediction time t0 is dropped here again, and counted. Per stay the latest
decodable image is kept (ties: lowest dicom_id); a stay whose images all failed to decode
keeps its latest one with `ok = false` and no vector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from moe.cxr_encoder import CxrEncoder, ProgressFn, decode_failures_warning, fill_cxr_cache
from moe.dataset import prediction_times, vector_column
from moe.embed_config import CxrEmbeddingSettings
from moe.embedding_cache import EmbeddingCache, add_counts, int_counts, per_second, progress_logger
from plumbing.atomic import write_parquet_atomic

CXR_FOLDERS = [f"p{i}" for i in range(10, 20)]
OTHER_SHARD = "other"
Log = Callable[[str], None]


def cxr_folder(path: str) -> str:
    """MIMIC-CXR top folder of a relative path `files/pNN/...` ('other' if none)."""
    for part in Path(str(path)).parts[:3]:
        if len(part) == 3 and part[0] == "p" and part[1:].isdigit():
            return part
    return OTHER_SHARD


def eligible_images(
    cohort_cxr: pd.DataFrame, cohort: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`stay_id, dicom_id, study_time, path, prediction_time, shard` of images before t0.

    `cohort_cxr`: `stay_id, dicom_id, study_time, path`; `cohort`: `stay_id, prediction_time`."""
    cxr = cohort_cxr[["stay_id", "dicom_id", "study_time", "path"]].copy()
    cxr["study_time"] = pd.to_datetime(cxr["study_time"])
    df = cxr.merge(prediction_times(cohort), on="stay_id", how="inner")
    ok = df["study_time"].notna() & (df["study_time"] < df["prediction_time"])
    df = df[ok].reset_index(drop=True)
    df["shard"] = df["path"].astype(str).map(cxr_folder)
    return df, {"images_dropped_at_or_after_t0": int((~ok).sum())}


def fill_cxr_shard(
    encoder: CxrEncoder,
    cache: EmbeddingCache,
    cxr_root: Path,
    images: pd.DataFrame,
    shard: str,
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Embed the not-yet-cached images of one folder (paths relative to `cxr_root`).
    Returns (the folder's rows with `key`, counts)."""
    part = images[images["shard"] == shard].reset_index(drop=True)
    uniq = part.drop_duplicates("path")
    files = [cxr_root / p for p in uniq["path"].astype(str)]
    stats = fill_cxr_cache(encoder, cache, shard, files, progress=progress)
    key_of = dict(zip(uniq["path"].astype(str), stats.keys, strict=True))
    part = part.assign(key=part["path"].astype(str).map(key_of))
    counts = {
        "images": stats.n_images,
        "images_embedded_now": stats.embedded,
        "cache_hits": stats.cache_hits,
        "new_decode_failures": stats.failed,
        "missing_files": stats.missing_files,
        "embed_seconds": stats.seconds,
    }
    return part, counts


def pick_image_per_stay(rows: pd.DataFrame) -> pd.DataFrame:
    """Latest decodable image per stay (ties: lowest dicom_id); else the latest failed one."""
    rows = rows.sort_values(
        ["stay_id", "ok", "study_time", "dicom_id"], ascending=[True, False, False, True]
    )
    return rows.drop_duplicates("stay_id", keep="first")


def stay_images(part: pd.DataFrame, cache: EmbeddingCache) -> tuple[pa.Table, int]:
    """(`stay_id, dicom_id, ok, vector`, one row per stay of `part`; images whose cached
    entry is a decode failure). `part`: rows with `key` from `fill_cxr_shard`."""
    found = cache.lookup(part["key"].dropna().unique().tolist())
    status = [found.get(k) if isinstance(k, str) else None for k in part["key"]]
    part = part.assign(ok=[bool(st is not None and st[0]) for st in status])
    failed_keys = {k for k, st in zip(part["key"], status, strict=True) if st and not st[0]}
    chosen = pick_image_per_stay(part)
    vecs = [found[k][1] if ok else None for k, ok in zip(chosen["key"], chosen["ok"], strict=True)]
    table = pa.table(
        {
            "stay_id": pa.array(chosen["stay_id"].astype("int64").tolist(), type=pa.int64()),
            "dicom_id": pa.array(chosen["dicom_id"].astype(str).tolist(), type=pa.string()),
            "ok": pa.array(chosen["ok"].tolist(), type=pa.bool_()),
            "vector": vector_column(vecs),
        }
    )
    return table, len(failed_keys)


def embed_images_per_stay(
    encoder: CxrEncoder,
    cache: EmbeddingCache,
    cxr_root: Path,
    images: pd.DataFrame,
    out_dir: Path,
    log: Callable[[str], None] | None = None,
    log_every: int = CxrEmbeddingSettings.log_every,
) -> tuple[dict[str, float], dict[str, int]]:
    """Fill the cache folder by folder and write `out_dir/<folder>.parquet` (`stay_images`)
    for each; files of folders that no longer have a stay are removed. `log` gets a
    progress line per `log_every` batches. Returns (counts, stays per folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, float] = {}
    per_shard: dict[str, int] = {}
    for shard in sorted(images["shard"].unique()):
        progress = progress_logger(log, f"cxr {shard}", log_every) if log else None
        part, c = fill_cxr_shard(encoder, cache, cxr_root, images, shard, progress)
        add_counts(counts, c)
        table, failed = stay_images(part, cache)
        add_counts(counts, {"decode_failures": failed})
        write_parquet_atomic(table, out_dir / f"{shard}.parquet")
        per_shard[shard] = int(table.num_rows)
    for stale in out_dir.glob("*.parquet"):
        if stale.stem not in per_shard:
            stale.unlink()
    return counts, per_shard


def _rate(counts: Mapping[str, float]) -> float:
    """Images per second; a decode failure is work done too."""
    work = counts.get("images_embedded_now", 0) + counts.get("new_decode_failures", 0)
    return per_second(work, counts.get("embed_seconds", 0.0))


def stays_summary(
    encoder: CxrEncoder,
    counts: Mapping[str, float],
    dropped: Mapping[str, int],
    per_folder: Mapping[str, int],
) -> dict[str, Any]:
    """What `embed_images_per_stay` did, as plain values (the asset's metadata): the
    encoder, counts (`dropped` from `eligible_images`), stays per folder, images per second."""
    return {
        "cxr_weights": encoder.weights_desc,
        "model_id": encoder.model_id,
        "model_key": encoder.model_key,
        "device": encoder.device_used,
        "dim": encoder.dim,
        "images_eligible": int(counts.get("images", 0)),
        **int_counts(counts, "images_embedded_now", "cache_hits", "decode_failures", "missing_files"),
        **dropped,
        "stays_per_folder": dict(per_folder),
        "rate_images_per_s": _rate(counts),
    }


def undecoded_warning(counts: Mapping[str, float], cxr_root: Path, failed: str) -> str | None:
    """The WARNING line for the `failed` count of `counts` (`decode_failures` of a run,
    `new_decode_failures` of a shard fill), or None when there are none."""
    return decode_failures_warning(
        int(counts.get(failed, 0)), int(counts.get("images", 0)), str(cxr_root)
    )


def shard_summary(encoder: CxrEncoder, counts: Mapping[str, float]) -> dict[str, Any]:
    """What `fill_cxr_shard` did, as plain values (the partitioned asset's metadata)."""
    return {
        "cxr_weights": encoder.weights_desc,
        "model_key": encoder.model_key,
        "device": encoder.device_used,
        **int_counts(counts, "images", "images_embedded_now", "cache_hits", "new_decode_failures",
                     "missing_files"),
        "rate_images_per_s": _rate(counts),
    }


@dataclass
class ImageWork:
    """One run's settings, encoder, cache, image root and images before t0 (with the count
    of those dropped): `per_stay` embeds them all and writes one file per folder, `fill`
    fills the cache for one folder."""

    settings: CxrEmbeddingSettings
    encoder: CxrEncoder
    cache: EmbeddingCache
    cxr_root: Path
    images: pd.DataFrame
    dropped: dict[str, int]

    @classmethod
    def of(
        cls,
        settings: CxrEmbeddingSettings,
        encoder: CxrEncoder,
        cache_dir: Path,
        cxr_root: Path,
        cohort_cxr: pd.DataFrame,
        cohort: pd.DataFrame,
    ) -> ImageWork:
        """`encoder`'s cache under `cache_dir` and the images of `eligible_images`."""
        cache = EmbeddingCache(cache_dir, "cxr", encoder.model_key, encoder.dim)
        return cls(settings, encoder, cache, cxr_root, *eligible_images(cohort_cxr, cohort))

    def per_stay(
        self, out_dir: Path, log: Log | None = None
    ) -> tuple[dict[str, float], dict[str, int]]:
        """`embed_images_per_stay` into `out_dir`: (counts, stays per folder)."""
        return embed_images_per_stay(self.encoder, self.cache, self.cxr_root, self.images,
                                     out_dir, log, self.settings.log_every)  # fmt: skip

    def fill(self, shard: str, log: Log | None = None) -> dict[str, float]:
        """`fill_cxr_shard` of folder `shard`: its counts."""
        progress = progress_logger(log, f"cxr {shard}", self.settings.log_every) if log else None
        root = self.cxr_root
        return fill_cxr_shard(self.encoder, self.cache, root, self.images, shard, progress)[1]

    def summary(self, counts: Mapping[str, float], per_folder: Mapping[str, int]) -> dict[str, Any]:
        """`stays_summary` of a `per_stay` run."""
        return stays_summary(self.encoder, counts, self.dropped, per_folder)

    def shard_summary(self, counts: Mapping[str, float]) -> dict[str, Any]:
        return shard_summary(self.encoder, counts)

    def warning(self, counts: Mapping[str, float], failed: str) -> str | None:
        """`undecoded_warning` for the `failed` count (`decode_failures`, `new_decode_failures`)."""
        return undecoded_warning(counts, self.cxr_root, failed)


__all__ = ["CXR_FOLDERS", "OTHER_SHARD", "ImageWork", "cxr_folder", "eligible_images",
           "embed_images_per_stay", "fill_cxr_shard", "pick_image_per_stay", "shard_summary",
           "stay_images", "stays_summary", "undecoded_warning"]
