"""Per-modality vectors per stay (cached, incremental) and the table the MoE heads train on.

Assets (group `embeddings`): `note_embeddings`, `cxr_embeddings`, `ehr_vectors`;
(group `dataset`): `multimodal_dataset`; (group `scale_out`): `note_embedding_cache`
and `cxr_embedding_cache`, partitioned cache fillers for backfills spread over
processes or machines.

The unpartitioned assets do their work shard by shard (notes: 16 buckets of
sha256(note_id); CXR: MIMIC-CXR's `pNN` folders), filling the content-addressed cache
under `$MOE_DATA_DIR/cache/` as they go (a killed run redoes only the shard in flight),
then assemble per-stay outputs from the cache. The partitioned assets run the same shard
function for one partition, so after a backfill the unpartitioned ones find everything
cached. Dagster cannot mix partitioned and unpartitioned assets in one run, so the
`*moe_mortality` selection goes through the unpartitioned ones.

Leak guard: notes whose `charttime` (or `storetime`, when the staged table has it) is at
or after the stay's prediction time t0, and images whose `study_time` is, are dropped
here again even though the cohort step already excludes them; the count is reported.
"""

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from moe.cxr_encoder import CxrEncoder, fill_cxr_cache
from moe.ehr_vectors import build_ehr_vectors
from moe.embedding_cache import EmbeddingCache
from moe.text_encoder import TextEncoder, fill_note_cache, recency_weighted_mean
from plumbing.atomic import write_json_atomic, write_parquet_atomic
from plumbing.pools import TORCH_POOL
from plumbing.resources import ProjectResource, require_table
from plumbing.settings import ProjectPaths

N_NOTE_BUCKETS = 16
NOTE_BUCKETS = [f"{i:02d}" for i in range(N_NOTE_BUCKETS)]
CXR_FOLDERS = [f"p{i}" for i in range(10, 20)]
OTHER_SHARD = "other"

note_bucket_partitions = StaticPartitionsDefinition(NOTE_BUCKETS)
cxr_folder_partitions = StaticPartitionsDefinition(CXR_FOLDERS)

_K = AssetKey
_NOTE_DEPS = [_K("cohort"), _K("cohort_notes"), _K("staged_discharge"), _K("staged_radiology")]
_CXR_DEPS = [_K("cohort"), _K("cohort_cxr")]
_DATASET_LIST_COLS = ("ehr", "notes", "cxr")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------
class NoteEmbeddingsConfig(Config):
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (bundled, default) or the path of a local "
        "sentence-transformers model folder (e.g. a clinical PubMedBERT model). Never downloaded.",
    )
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda, cuda:N")
    batch_size: int = Field(default=64, description="Chunks per forward pass.")
    chunk_tokens: int = Field(default=0, description="Tokens per chunk; 0 = model limit - 2.")
    chunk_overlap: int = Field(default=32, description="Overlap between chunks, in tokens.")
    recency_half_life_hours: float = Field(
        default=720.0,
        description="Stay vector = mean of note vectors weighted by 0.5**(hours before t0 / this).",
    )
    log_every: int = Field(default=10, description="Log progress every N blocks/batches.")


class CxrEmbeddingsConfig(Config):
    cxr_weights: str = Field(
        default="random",
        description="'random' (seeded; demo only, NOT pretrained) or the local path of "
        "torchxrayvision's densenet121-res224-all weights file.",
    )
    allow_random_weights: bool = Field(
        default=False, description="Allow cxr_weights='random' on real (non-demo) data."
    )
    seed: int = Field(default=0, description="Seed of the random init.")
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda")
    batch_size: int = Field(default=16, description="Images per forward pass.")
    num_workers: int = Field(
        default=-1,
        description="DataLoader decode workers; -1: auto (none on a 2-core CPU, where the "
        "forward pass already uses every core; up to 4 beside a GPU).",
    )
    log_every: int = Field(default=20, description="Log progress every N batches.")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
def _read_table(paths: ProjectPaths, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(require_table(paths, name, name), columns=columns)


def _progress(context: AssetExecutionContext, what: str, every: int) -> Callable[[int, int], None]:
    every = max(1, every)

    def log(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            context.log.info(f"{what}: {done}/{total}")

    return log


def note_bucket(note_id: str) -> str:
    """Stable shard of a note: sha256(note_id) mod 16, as '00'..'15'."""
    return f"{int(hashlib.sha256(str(note_id).encode()).hexdigest()[:8], 16) % N_NOTE_BUCKETS:02d}"


def cxr_folder(path: str) -> str:
    """MIMIC-CXR top folder of a relative path `files/pNN/...` ('other' if none)."""
    for part in Path(str(path)).parts[:3]:
        if len(part) == 3 and part[0] == "p" and part[1:].isdigit():
            return part
    return OTHER_SHARD


def _t0(paths: ProjectPaths) -> pd.DataFrame:
    cohort = _read_table(paths, "cohort", ["stay_id", "prediction_time"])
    cohort["prediction_time"] = pd.to_datetime(cohort["prediction_time"])
    return cohort


def _staged_columns(path: Path) -> list[str]:
    return list(pq.read_schema(path).names) if path.exists() else []


def eligible_notes(paths: ProjectPaths) -> tuple[pd.DataFrame, dict[str, int]]:
    """`stay_id, note_id, charttime, prediction_time, source` of notes before t0."""
    notes = _read_table(paths, "cohort_notes", ["stay_id", "note_id", "charttime"])
    notes["note_id"] = notes["note_id"].astype(str)
    notes["charttime"] = pd.to_datetime(notes["charttime"])
    df = notes.merge(_t0(paths), on="stay_id", how="inner")
    ok = df["charttime"].notna() & (df["charttime"] < df["prediction_time"])
    dropped = int((~ok).sum())
    return df[ok].reset_index(drop=True), {"notes_dropped_at_or_after_t0": dropped}


def load_note_texts(paths: ProjectPaths, note_ids: list[str]) -> pd.DataFrame:
    """`note_id, text, storetime` for `note_ids` from the staged note tables (DuckDB join)."""
    frames = []
    ids = pd.DataFrame({"note_id": pd.Series(note_ids, dtype="string")})
    con = duckdb.connect()
    try:
        con.register("wanted", ids)
        for name in ("staged_discharge", "staged_radiology"):
            path = paths.table(name)
            cols = _staged_columns(path)
            if not cols or "text" not in cols:
                continue
            store = "CAST(s.storetime AS TIMESTAMP)" if "storetime" in cols else "NULL::TIMESTAMP"
            frames.append(
                con.execute(
                    f"SELECT CAST(s.note_id AS VARCHAR) AS note_id, s.text, {store} AS storetime "
                    "FROM read_parquet(?) s JOIN wanted w ON CAST(s.note_id AS VARCHAR) = w.note_id",
                    [str(path)],
                ).df()
            )
    finally:
        con.close()
    if not frames:
        return pd.DataFrame({"note_id": [], "text": [], "storetime": []})
    out = pd.concat(frames, ignore_index=True).drop_duplicates("note_id")
    out["storetime"] = pd.to_datetime(out["storetime"])
    return out


def _note_shard_rows(
    paths: ProjectPaths, notes: pd.DataFrame, shard: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Eligible notes of one bucket with their text; drops storetime >= t0 and textless notes."""
    part = notes[notes["note_id"].map(note_bucket) == shard]
    if part.empty:
        return part.assign(text=pd.Series(dtype="string")), {}
    texts = load_note_texts(paths, sorted(part["note_id"].unique().tolist()))
    df = part.merge(texts, on="note_id", how="left")
    no_text = df["text"].isna()
    late_store = df["storetime"].notna() & (df["storetime"] >= df["prediction_time"])
    counts: dict[str, float] = {
        "notes_without_text": int(no_text.sum()),
        "notes_dropped_at_or_after_t0": int((late_store & ~no_text).sum()),
    }
    return df[~no_text & ~late_store].reset_index(drop=True), counts


def _add(acc: dict[str, float], more: Mapping[str, float]) -> None:
    for k, v in more.items():
        acc[k] = acc.get(k, 0) + v


def _text_encoder(config: NoteEmbeddingsConfig) -> TextEncoder:
    try:
        return TextEncoder(
            model=config.model,
            device=config.device,
            batch_size=config.batch_size,
            chunk_tokens=config.chunk_tokens,
            chunk_overlap=config.chunk_overlap,
        )
    except FileNotFoundError as e:
        raise Failure(str(e)) from e


def fill_note_shard(
    context: AssetExecutionContext,
    paths: ProjectPaths,
    encoder: TextEncoder,
    cache: EmbeddingCache,
    notes: pd.DataFrame,
    shard: str,
    log_every: int,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Embed the not-yet-cached notes of one bucket. Returns (rows with `key`, counts)."""
    rows, counts = _note_shard_rows(paths, notes, shard)
    uniq = rows.drop_duplicates("note_id")
    stats = fill_note_cache(
        encoder,
        cache,
        f"b{shard}",
        uniq["text"].tolist(),
        progress=_progress(context, f"notes bucket {shard}", log_every),
    )
    key_of = dict(zip(uniq["note_id"], stats.keys, strict=True))
    rows = rows.assign(key=rows["note_id"].map(key_of)).drop(columns=["text"])
    _add(
        counts,
        {
            "notes": stats.n_notes,
            "notes_embedded_now": stats.embedded,
            "cache_hits": stats.cache_hits,
            "embed_seconds": stats.seconds,
        },
    )
    return rows, counts


def _cxr_encoder(config: CxrEmbeddingsConfig, paths: ProjectPaths) -> CxrEncoder:
    if config.cxr_weights == "random" and not paths.is_demo and not config.allow_random_weights:
        raise Failure(
            "cxr_weights='random' on real MIMIC data would train on meaningless image features. "
            "Download torchxrayvision's densenet121-res224-all weights (see moe.cxr_encoder."
            "WEIGHTS_URL) and set the `cxr_weights` config to the file's path, or set "
            "allow_random_weights: true to opt in explicitly."
        )
    try:
        return CxrEncoder(
            weights=config.cxr_weights,
            seed=config.seed,
            device=config.device,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
        )
    except FileNotFoundError as e:
        raise Failure(str(e)) from e


def eligible_images(paths: ProjectPaths) -> tuple[pd.DataFrame, dict[str, int]]:
    """`stay_id, dicom_id, study_time, path, shard` of images before t0."""
    path = require_table(paths, "cohort_cxr", "cxr_embeddings")
    cxr = pd.read_parquet(path, columns=["stay_id", "dicom_id", "study_time", "path"])
    cxr["study_time"] = pd.to_datetime(cxr["study_time"])
    df = cxr.merge(_t0(paths), on="stay_id", how="inner")
    ok = df["study_time"].notna() & (df["study_time"] < df["prediction_time"])
    df = df[ok].reset_index(drop=True)
    df["shard"] = df["path"].astype(str).map(cxr_folder)
    return df, {"images_dropped_at_or_after_t0": int((~ok).sum())}


def fill_cxr_shard(
    context: AssetExecutionContext,
    paths: ProjectPaths,
    encoder: CxrEncoder,
    cache: EmbeddingCache,
    images: pd.DataFrame,
    shard: str,
    log_every: int,
) -> tuple[pd.DataFrame, dict[str, float]]:
    part = images[images["shard"] == shard].reset_index(drop=True)
    uniq = part.drop_duplicates("path")
    files = [paths.raw_root / "cxr" / p for p in uniq["path"].astype(str)]
    stats = fill_cxr_cache(
        encoder,
        cache,
        shard,
        files,
        progress=_progress(context, f"cxr {shard}", log_every),
    )
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


def _vector_array(vectors: Sequence[np.ndarray | None], dim: int) -> pa.Array:
    return pa.array(
        [None if v is None else np.asarray(v, dtype=np.float32).tolist() for v in vectors],
        type=pa.list_(pa.float32()),
    )


def _rate(n: float, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 and n else 0.0


# ---------------------------------------------------------------------------------------
# Notes
# ---------------------------------------------------------------------------------------
@asset(
    deps=_NOTE_DEPS,
    group_name="embeddings",
    kinds={"torch", "parquet"},
    pool=TORCH_POOL,
    description="One sentence-transformers vector per stay with notes (recency-weighted mean "
    "of its eligible notes; long notes chunked). Content-addressed cache: unchanged notes "
    "are never embedded twice. Writes note_embeddings.parquet (stay_id, n_notes, vector).",
)
def note_embeddings(
    context: AssetExecutionContext, config: NoteEmbeddingsConfig, project: ProjectResource
) -> MaterializeResult:
    paths = project.paths()
    t_start = time.perf_counter()
    encoder = _text_encoder(config)
    cache = EmbeddingCache(paths.cache_dir, "notes", encoder.model_key, encoder.dim)
    notes, counts0 = eligible_notes(paths)
    counts: dict[str, float] = dict(counts0)
    rows = []
    for shard in NOTE_BUCKETS:
        shard_rows, c = fill_note_shard(
            context, paths, encoder, cache, notes, shard, config.log_every
        )
        rows.append(shard_rows)
        _add(counts, c)
    all_rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    found = cache.lookup(all_rows["key"].dropna().unique().tolist()) if len(all_rows) else {}
    out_ids, out_n, out_vecs = [], [], []
    if len(all_rows):
        all_rows = all_rows[all_rows["key"].map(lambda k: k in found and found[k][0])]
        hours = (all_rows["prediction_time"] - all_rows["charttime"]).dt.total_seconds() / 3600
        all_rows = all_rows.assign(age_hours=hours)
        for stay_id, g in all_rows.groupby("stay_id", sort=True):
            g = g.drop_duplicates("note_id")
            vecs = np.stack([found[k][1] for k in g["key"]])  # type: ignore[misc]
            out_ids.append(int(stay_id))  # type: ignore[arg-type,call-overload]
            out_n.append(len(g))
            out_vecs.append(
                recency_weighted_mean(
                    vecs, g["age_hours"].to_numpy(), config.recency_half_life_hours
                )
            )
    table = pa.table(
        {
            "stay_id": pa.array(out_ids, type=pa.int64()),
            "n_notes": pa.array(out_n, type=pa.int32()),
            "vector": _vector_array(out_vecs, encoder.dim),
        }
    )
    out = write_parquet_atomic(table, paths.table("note_embeddings"))
    wall = time.perf_counter() - t_start
    embedded = int(counts.get("notes_embedded_now", 0))
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "model": encoder.model_name,
            "model_revision": encoder.revision,
            "model_key": encoder.model_key,
            "device": encoder.device_used,
            "dim": encoder.dim,
            "chunk_tokens": encoder.chunk_tokens,
            "chunk_overlap": encoder.chunk_overlap,
            "stay_pooling": f"recency-weighted mean, half-life {config.recency_half_life_hours} h",
            "stays_with_notes": len(out_ids),
            "notes_eligible": int(counts.get("notes", 0)),
            "notes_embedded_now": embedded,
            "cache_hits": int(counts.get("cache_hits", 0)),
            "notes_without_text": int(counts.get("notes_without_text", 0)),
            "notes_dropped_at_or_after_t0": int(counts.get("notes_dropped_at_or_after_t0", 0)),
            "rate_notes_per_s": _rate(embedded, counts.get("embed_seconds", 0.0)),
            "wall_seconds": round(wall, 2),
        }
    )


@asset(
    deps=_NOTE_DEPS,
    group_name="scale_out",
    kinds={"torch", "parquet"},
    partitions_def=note_bucket_partitions,
    description="Fills the note embedding cache for one hash bucket of note_id (backfills "
    "across processes/machines). note_embeddings then finds these notes cached.",
)
def note_embedding_cache(
    context: AssetExecutionContext, config: NoteEmbeddingsConfig, project: ProjectResource
) -> MaterializeResult:
    paths = project.paths()
    shard = context.partition_key
    encoder = _text_encoder(config)
    cache = EmbeddingCache(paths.cache_dir, "notes", encoder.model_key, encoder.dim)
    notes, counts0 = eligible_notes(paths)
    _, c = fill_note_shard(context, paths, encoder, cache, notes, shard, config.log_every)
    embedded = int(c.get("notes_embedded_now", 0))
    return MaterializeResult(
        metadata={
            "bucket": shard,
            "model": encoder.model_name,
            "model_key": encoder.model_key,
            "device": encoder.device_used,
            "notes": int(c.get("notes", 0)),
            "notes_embedded_now": embedded,
            "cache_hits": int(c.get("cache_hits", 0)),
            "rate_notes_per_s": _rate(embedded, c.get("embed_seconds", 0.0)),
        }
    )


# ---------------------------------------------------------------------------------------
# CXR
# ---------------------------------------------------------------------------------------
def _pick_image_per_stay(rows: pd.DataFrame) -> pd.DataFrame:
    """Latest decodable image per stay (ties: lowest dicom_id); else the latest failed one."""
    rows = rows.sort_values(
        ["stay_id", "ok", "study_time", "dicom_id"], ascending=[True, False, False, True]
    )
    return rows.drop_duplicates("stay_id", keep="first")


@asset(
    deps=_CXR_DEPS,
    group_name="embeddings",
    kinds={"torch", "parquet"},
    pool=TORCH_POOL,
    description="torchxrayvision DenseNet-121 features2 (1024-d) per stay with a chest X-ray, "
    "processed by MIMIC-CXR pNN folder with a content-addressed cache. Undecodable images "
    "are counted and marked ok=false. Writes cxr_embeddings/pNN.parquet "
    "(stay_id, dicom_id, ok, vector).",
)
def cxr_embeddings(
    context: AssetExecutionContext, config: CxrEmbeddingsConfig, project: ProjectResource
) -> MaterializeResult:
    paths = project.paths()
    t_start = time.perf_counter()
    encoder = _cxr_encoder(config, paths)
    if not encoder.pretrained:
        context.log.warning("cxr_weights=random: image features are NOT pretrained (demo only).")
    cache = EmbeddingCache(paths.cache_dir, "cxr", encoder.model_key, encoder.dim)
    images, counts0 = eligible_images(paths)
    counts: dict[str, float] = dict(counts0)
    out_dir = paths.data_dir / "cxr_embeddings"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    per_shard: dict[str, int] = {}
    for shard in sorted(images["shard"].unique()):
        part, c = fill_cxr_shard(context, paths, encoder, cache, images, shard, config.log_every)
        _add(counts, c)
        found = cache.lookup(part["key"].dropna().unique().tolist())
        status = [found.get(k) if isinstance(k, str) else None for k in part["key"]]
        part = part.assign(ok=[bool(st is not None and st[0]) for st in status])
        failed_keys = {k for k, st in zip(part["key"], status, strict=True) if st and not st[0]}
        counts["decode_failures"] = counts.get("decode_failures", 0) + len(failed_keys)
        chosen = _pick_image_per_stay(part)
        vecs = [
            found[k][1] if ok else None for k, ok in zip(chosen["key"], chosen["ok"], strict=True)
        ]
        table = pa.table(
            {
                "stay_id": pa.array(chosen["stay_id"].astype("int64").tolist(), type=pa.int64()),
                "dicom_id": pa.array(chosen["dicom_id"].astype(str).tolist(), type=pa.string()),
                "ok": pa.array(chosen["ok"].tolist(), type=pa.bool_()),
                "vector": _vector_array(vecs, encoder.dim),
            }
        )
        write_parquet_atomic(table, out_dir / f"{shard}.parquet")
        written.add(f"{shard}.parquet")
        per_shard[shard] = int(table.num_rows)
    for stale in out_dir.glob("*.parquet"):  # shards that no longer have any stay
        if stale.name not in written:
            stale.unlink()
    wall = time.perf_counter() - t_start
    embedded = int(counts.get("images_embedded_now", 0))
    work = embedded + int(counts.get("new_decode_failures", 0))
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "cxr_weights": encoder.weights_desc,
            "model_id": encoder.model_id,
            "model_key": encoder.model_key,
            "device": encoder.device_used,
            "dim": encoder.dim,
            "images_eligible": int(counts.get("images", 0)),
            "images_embedded_now": embedded,
            "cache_hits": int(counts.get("cache_hits", 0)),
            "decode_failures": int(counts.get("decode_failures", 0)),
            "missing_files": int(counts.get("missing_files", 0)),
            "images_dropped_at_or_after_t0": int(counts.get("images_dropped_at_or_after_t0", 0)),
            "stays_per_folder": MetadataValue.json(per_shard),
            "rate_images_per_s": _rate(work, counts.get("embed_seconds", 0.0)),
            "wall_seconds": round(wall, 2),
        }
    )


@asset(
    deps=_CXR_DEPS,
    group_name="scale_out",
    kinds={"torch", "parquet"},
    partitions_def=cxr_folder_partitions,
    description="Fills the CXR embedding cache for one MIMIC-CXR pNN folder (backfills across "
    "processes/machines). cxr_embeddings then finds these images cached.",
)
def cxr_embedding_cache(
    context: AssetExecutionContext, config: CxrEmbeddingsConfig, project: ProjectResource
) -> MaterializeResult:
    paths = project.paths()
    shard = context.partition_key
    encoder = _cxr_encoder(config, paths)
    cache = EmbeddingCache(paths.cache_dir, "cxr", encoder.model_key, encoder.dim)
    images, _ = eligible_images(paths)
    _, c = fill_cxr_shard(context, paths, encoder, cache, images, shard, config.log_every)
    embedded = int(c.get("images_embedded_now", 0))
    return MaterializeResult(
        metadata={
            "folder": shard,
            "cxr_weights": encoder.weights_desc,
            "model_key": encoder.model_key,
            "device": encoder.device_used,
            "images": int(c.get("images", 0)),
            "images_embedded_now": embedded,
            "cache_hits": int(c.get("cache_hits", 0)),
            "new_decode_failures": int(c.get("new_decode_failures", 0)),
            "missing_files": int(c.get("missing_files", 0)),
            "rate_images_per_s": _rate(
                embedded + int(c.get("new_decode_failures", 0)), c.get("embed_seconds", 0.0)
            ),
        }
    )


# ---------------------------------------------------------------------------------------
# EHR + dataset
# ---------------------------------------------------------------------------------------
@asset(
    deps=[_K("cohort"), _K("ehr_features")],
    group_name="embeddings",
    kinds={"parquet"},
    description="EHR vector per stay: train-split mean imputation and standardisation, plus "
    "missingness indicators. Writes ehr_vectors.parquet (stay_id, vector) and "
    "ehr_vectors.stats.json (feature names, train means/stds).",
)
def ehr_vectors(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
    paths = project.paths()
    features = _read_table(paths, "ehr_features")
    cohort = _read_table(paths, "cohort", ["stay_id", "split"])
    vectors, std = build_ehr_vectors(features, cohort.set_index("stay_id")["split"])
    table = pa.table(
        {
            "stay_id": pa.array(vectors["stay_id"].astype("int64").tolist(), type=pa.int64()),
            "vector": _vector_array(list(vectors["vector"]), std.dim),
        }
    )
    out = write_parquet_atomic(table, paths.table("ehr_vectors"))
    write_json_atomic(std.to_dict(), paths.data_dir / "ehr_vectors.stats.json")
    if std.n_train == 0:
        context.log.warning("No train stays in ehr_features: vectors are not standardised.")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "dim": std.dim,
            "n_values": len(std.columns),
            "n_missing_indicators": len(std.indicator_names),
            "n_stays": int(table.num_rows),
            "n_train_stays_for_statistics": std.n_train,
        }
    )


def _vectors_by_stay(path: Path) -> dict[int, Any]:
    if not path.exists():
        return {}
    t = pq.read_table(path, columns=["stay_id", "vector"])
    return dict(zip(t.column("stay_id").to_pylist(), t.column("vector").to_pylist(), strict=True))


def _cxr_by_stay(folder: Path) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for f in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        t = pq.read_table(f, columns=["stay_id", "ok", "vector"])
        for s, ok, v in zip(
            *(t.column(c).to_pylist() for c in ("stay_id", "ok", "vector")), strict=True
        ):
            if ok and v is not None:
                out[s] = v
    return out


def assemble_dataset(paths: ProjectPaths) -> pa.Table:
    """One row per cohort stay with labels, availability flags and per-modality vectors."""
    cohort = _read_table(paths, "cohort")
    ehr = _vectors_by_stay(paths.table("ehr_vectors"))
    notes = _vectors_by_stay(paths.table("note_embeddings"))
    cxr = _cxr_by_stay(paths.data_dir / "cxr_embeddings")
    ids = cohort["stay_id"].astype("int64").tolist()

    def flag(col: str) -> list[bool]:
        if col not in cohort.columns:
            return [True] * len(cohort)
        return cohort[col].fillna(False).astype(bool).tolist()

    columns: dict[str, list[Any]] = {}
    for name, src, col in (
        ("ehr", ehr, "has_ehr"),
        ("notes", notes, "has_notes"),
        ("cxr", cxr, "has_cxr"),
    ):
        cohort_flag = flag(col)
        vecs = [src.get(s) if f else None for s, f in zip(ids, cohort_flag, strict=True)]
        columns[name] = vecs
        columns[col] = [v is not None for v in vecs]

    def label(col: str) -> pa.Array:
        if col not in cohort.columns:
            return pa.nulls(len(cohort), type=pa.int8())
        return pa.array(cohort[col].astype("Int8"), type=pa.int8(), from_pandas=True)

    def nullable(col: str, typ: pa.DataType) -> pa.Array:
        if col not in cohort.columns:
            return pa.nulls(len(cohort), type=typ)
        vals = cohort[col].astype(object).where(cohort[col].notna(), None).tolist()
        return pa.array(vals, type=typ, from_pandas=True)

    return pa.table(
        {
            "stay_id": pa.array(ids, type=pa.int64()),
            "split": pa.array(cohort["split"].astype(str).tolist(), type=pa.string()),
            "mortality": label("mortality"),
            "long_los": label("long_los"),
            "readmission": label("readmission"),
            "has_ehr": pa.array(columns["has_ehr"], type=pa.bool_()),
            "has_notes": pa.array(columns["has_notes"], type=pa.bool_()),
            "has_cxr": pa.array(columns["has_cxr"], type=pa.bool_()),
            "ehr": pa.array(columns["ehr"], type=pa.list_(pa.float32())),
            "notes": pa.array(columns["notes"], type=pa.list_(pa.float32())),
            "cxr": pa.array(columns["cxr"], type=pa.list_(pa.float32())),
            "age": nullable("age", pa.float64()),
            "gender": nullable("gender", pa.string()),
        }
    )


def _dims(table: pa.Table) -> dict[str, int]:
    dims: dict[str, int] = {}
    for c in _DATASET_LIST_COLS:
        lengths = {len(v) for v in table.column(c).to_pylist() if v is not None}
        if len(lengths) > 1:
            raise Failure(
                f"multimodal_dataset: column {c} has vectors of lengths {sorted(lengths)}"
            )
        dims[c] = lengths.pop() if lengths else 0
    return dims


@asset(
    deps=[_K("cohort"), _K("ehr_vectors"), _K("note_embeddings"), _K("cxr_embeddings")],
    group_name="dataset",
    kinds={"parquet"},
    description="One row per cohort stay: labels, split, availability flags and the ehr/notes/"
    "cxr vectors (null where missing or where the X-ray failed to decode), plus age and gender.",
)
def multimodal_dataset(
    context: AssetExecutionContext, project: ProjectResource
) -> MaterializeResult:
    paths = project.paths()
    table = assemble_dataset(paths)
    dims = _dims(table)
    out = write_parquet_atomic(table, paths.table("multimodal_dataset"))
    df = table.select(["split", "has_ehr", "has_notes", "has_cxr"]).to_pandas()
    pattern = (
        df["has_ehr"].map({True: "E", False: "-"})
        + df["has_notes"].map({True: "N", False: "-"})
        + df["has_cxr"].map({True: "X", False: "-"})
    )
    patterns = pd.crosstab(pattern, df["split"]).to_dict()
    patterns_json = {
        str(split): {str(p): int(n) for p, n in counts.items() if n}
        for split, counts in patterns.items()
    }
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out)),
            "n_stays": int(table.num_rows),
            "dims": MetadataValue.json(dims),
            "availability_patterns_per_split": MetadataValue.json(patterns_json),
            "pattern_legend": "E=EHR, N=notes, X=chest X-ray, '-'=missing",
        }
    )
