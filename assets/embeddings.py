"""Per-modality vectors per stay (cached, incremental) and the table the MoE heads train on.

Assets (group `embeddings`): `note_embeddings`, `cxr_embeddings`, `ehr_vectors`;
(group `dataset`): `multimodal_dataset`; (group `scale_out`): `note_embedding_cache` and
`cxr_embedding_cache`, partitioned cache fillers for backfills spread over processes or
machines. The work is the library's: `moe.note_pooling` (16 note_id buckets, leak guard,
recency pooling), `moe.image_choice` (MIMIC-CXR `pNN` folders, leak guard, one image per
stay), `moe.ehr_vectors`, `moe.dataset`. The partitioned assets fill the cache for one
shard, so after a backfill the unpartitioned ones find everything cached (Dagster cannot
mix partitioned and unpartitioned assets in one run, so `*moe_mortality` goes through the
unpartitioned ones).
"""

import time
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from moe import dataset, image_choice, note_pooling
from moe.cxr_encoder import CxrEncoder, random_weights_refusal
from moe.ehr_vectors import ehr_vector_table
from moe.embedding_cache import EmbeddingCache, progress_logger
from moe.text_encoder import DEFAULT_MAX_CHUNKS, TextEncoder
from plumbing.atomic import write_json_atomic, write_parquet_atomic
from plumbing.dagster_config import config_of, launch_checked
from plumbing.pools import TORCH_POOL
from plumbing.resources import ProjectResource, require_table
from plumbing.reuse import parquet_stats
from plumbing.settings import ProjectPaths
from plumbing.tasks import built_task_names

note_bucket_partitions = dg.StaticPartitionsDefinition(note_pooling.NOTE_BUCKETS)
cxr_folder_partitions = dg.StaticPartitionsDefinition(image_choice.CXR_FOLDERS)

_K = dg.AssetKey
_NOTE_DEPS = [_K("cohort"), _K("cohort_notes"), _K("staged_discharge"), _K("staged_radiology")]
_CXR_DEPS = [_K("cohort"), _K("cohort_cxr")]
# Config fields passed through to the encoders as keyword arguments of the same name.
_TEXT_ENCODER_FIELDS = {"model", "device", "batch_size", "chunk_tokens", "chunk_overlap",
                        "backend", "quantization", "max_chunks_per_note"}  # fmt: skip
_CXR_ENCODER_FIELDS = {"seed", "device", "batch_size", "num_workers"}


class NoteEmbeddingsConfig(dg.Config):
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (bundled, default) or the path of a local "
        "sentence-transformers model folder (e.g. a clinical PubMedBERT model). Never downloaded.",
    )
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda, cuda:N")
    batch_size: int = Field(default=64, ge=1, description="Chunks per forward pass.")
    chunk_tokens: int = Field(default=0, ge=0, description="Tokens per chunk; 0 = model limit - 2.")
    chunk_overlap: int = Field(default=32, ge=0, description="Overlap between chunks, in tokens.")
    max_chunks_per_note: int = Field(
        default=DEFAULT_MAX_CHUNKS,
        ge=1,
        le=100_000,
        description="Longer notes keep this many chunks, evenly spaced (64: ~14,000 tokens, "
        "5x a real discharge summary); capped notes are counted and warned about.",
    )
    backend: str = Field(
        default="auto",
        description="auto (onnx on CPU when onnxruntime is installed, torch on a GPU), torch, "
        "onnx (ONNX Runtime over a local export of the model, made once into "
        "~/.cache/moe-health/onnx; never downloaded).",
    )
    quantization: str = Field(
        default="none",
        description="onnx backend only: none (fp32, equivalent to torch) or int8 (faster, "
        "min cosine ~0.98 with torch on the demo notes: not equivalent).",
    )
    recency_half_life_hours: float = Field(
        default=720.0,
        gt=0,
        description="Stay vector = mean of note vectors weighted by 0.5**(hours before t0 / this).",
    )
    log_every: int = Field(default=10, ge=1, description="Log progress every N blocks/batches.")


class CxrEmbeddingsConfig(dg.Config):
    cxr_weights: str = Field(
        default="random",
        description="'random' (seeded; demo only, NOT pretrained) or the local path of "
        "torchxrayvision's densenet121-res224-all weights file.",
    )
    allow_random_weights: bool = Field(
        default=False, description="Allow cxr_weights='random' on real (non-demo) data."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random init.")
    device: str = Field(default="auto", description="auto (cuda if available), cpu, cuda")
    batch_size: int = Field(default=16, ge=1, description="Images per forward pass.")
    num_workers: int = Field(
        default=-1,
        ge=-1,
        description="DataLoader decode workers; -1: auto (none on a 2-core CPU, where the "
        "forward pass already uses every core; up to 4 beside a GPU).",
    )
    log_every: int = Field(default=20, ge=1, description="Log progress every N batches.")


# Helpers: inputs with a clear error, encoders from config, warnings to the run log.
def _read(paths: ProjectPaths, name: str, asset: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Table `name`, or a Failure saying how to build it for `asset`."""
    return pd.read_parquet(require_table(paths, name, asset), columns=columns)


def _warn(context: dg.AssetExecutionContext, message: str | None) -> None:
    """A WARNING in the run log (the library's line: counts, never patient data)."""
    if message:
        context.log.warning(message)


def _notes_setup(
    config: NoteEmbeddingsConfig, paths: ProjectPaths
) -> tuple[TextEncoder, EmbeddingCache, list[Path], pd.DataFrame, dict[str, int]]:
    """The encoder, its cache, the staged note tables, the notes before t0 and drop counts."""
    try:
        encoder = TextEncoder(**config.model_dump(include=_TEXT_ENCODER_FIELDS))
    except (FileNotFoundError, ValueError) as e:
        raise dg.Failure(str(e)) from e
    cache = EmbeddingCache(paths.cache_dir, "notes", encoder.model_key, encoder.dim)
    notes = _read(paths, "cohort_notes", "note_embeddings", ["stay_id", "note_id", "charttime"])
    cohort = _read(paths, "cohort", "note_embeddings", ["stay_id", "prediction_time"])
    staged = [paths.table(name) for name in note_pooling.NOTE_TABLES]
    return encoder, cache, staged, *note_pooling.eligible_notes(notes, cohort)


def _cxr_setup(
    config: CxrEmbeddingsConfig, paths: ProjectPaths
) -> tuple[CxrEncoder, EmbeddingCache, Path, pd.DataFrame, dict[str, int]]:
    """The encoder, its cache, the image root, the images before t0 and drop counts."""
    refusal = random_weights_refusal(config.cxr_weights, paths.is_demo, config.allow_random_weights)
    if refusal:
        raise dg.Failure(refusal)
    try:
        encoder = CxrEncoder(weights=config.cxr_weights, **config.model_dump(include=_CXR_ENCODER_FIELDS))
    except FileNotFoundError as e:
        raise dg.Failure(str(e)) from e
    cache = EmbeddingCache(paths.cache_dir, "cxr", encoder.model_key, encoder.dim)
    cxr = _read(paths, "cohort_cxr", "cxr_embeddings", ["stay_id", "dicom_id", "study_time", "path"])
    cohort = _read(paths, "cohort", "cxr_embeddings", ["stay_id", "prediction_time"])
    return encoder, cache, paths.raw_root / "cxr", *image_choice.eligible_images(cxr, cohort)


# Notes
@dg.asset(
    config_schema=launch_checked(NoteEmbeddingsConfig),
    deps=_NOTE_DEPS,
    group_name="embeddings",
    kinds={"torch", "parquet"},
    pool=TORCH_POOL,
    description="One sentence-transformers vector per stay with notes (recency-weighted mean "
    "of its eligible notes; long notes chunked). Content-addressed cache: unchanged notes "
    "are never embedded twice. Writes note_embeddings.parquet (stay_id, n_notes, vector).",
)
def note_embeddings(
    context: dg.AssetExecutionContext, project: ProjectResource
) -> dg.MaterializeResult:
    config = config_of(context, NoteEmbeddingsConfig)
    paths = project.paths()
    t_start = time.perf_counter()
    encoder, cache, staged, notes, dropped = _notes_setup(config, paths)
    half_life = config.recency_half_life_hours
    table, counts = note_pooling.embed_notes_per_stay(
        encoder, cache, staged, notes, half_life, context.log.info, config.log_every
    )
    out = write_parquet_atomic(table, paths.table("note_embeddings"))
    _warn(context, note_pooling.capped_warning(encoder, counts))
    summary = note_pooling.stays_summary(encoder, table.num_rows, counts, dropped, half_life)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            **summary,
            "wall_seconds": round(time.perf_counter() - t_start, 2),
        }
    )


@dg.asset(
    config_schema=launch_checked(NoteEmbeddingsConfig),
    deps=_NOTE_DEPS,
    group_name="scale_out",
    kinds={"torch", "parquet"},
    partitions_def=note_bucket_partitions,
    description="Fills the note embedding cache for one hash bucket of note_id (backfills "
    "across processes/machines). note_embeddings then finds these notes cached.",
)
def note_embedding_cache(
    context: dg.AssetExecutionContext, project: ProjectResource
) -> dg.MaterializeResult:
    config = config_of(context, NoteEmbeddingsConfig)
    shard = context.partition_key
    encoder, cache, staged, notes, _ = _notes_setup(config, project.paths())
    progress = progress_logger(context.log.info, f"notes bucket {shard}", config.log_every)
    _, counts = note_pooling.fill_note_shard(encoder, cache, staged, notes, shard, progress)
    _warn(context, note_pooling.capped_warning(encoder, counts))
    return dg.MaterializeResult(
        metadata={"bucket": shard, **note_pooling.shard_summary(encoder, counts)}
    )


# CXR
@dg.asset(
    config_schema=launch_checked(CxrEmbeddingsConfig),
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
    context: dg.AssetExecutionContext, project: ProjectResource
) -> dg.MaterializeResult:
    config = config_of(context, CxrEmbeddingsConfig)
    paths = project.paths()
    t_start = time.perf_counter()
    encoder, cache, root, images, dropped = _cxr_setup(config, paths)
    if not encoder.pretrained:
        context.log.warning("cxr_weights=random: image features are NOT pretrained (demo only).")
    out_dir = paths.data_dir / "cxr_embeddings"
    counts, per_folder = image_choice.embed_images_per_stay(
        encoder, cache, root, images, out_dir, context.log.info, config.log_every
    )
    _warn(context, image_choice.undecoded_warning(counts, root, "decode_failures"))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out_dir)),
            **image_choice.stays_summary(encoder, counts, dropped, per_folder),
            "wall_seconds": round(time.perf_counter() - t_start, 2),
        }
    )


@dg.asset(
    config_schema=launch_checked(CxrEmbeddingsConfig),
    deps=_CXR_DEPS,
    group_name="scale_out",
    kinds={"torch", "parquet"},
    partitions_def=cxr_folder_partitions,
    description="Fills the CXR embedding cache for one MIMIC-CXR pNN folder (backfills across "
    "processes/machines). cxr_embeddings then finds these images cached.",
)
def cxr_embedding_cache(
    context: dg.AssetExecutionContext, project: ProjectResource
) -> dg.MaterializeResult:
    config = config_of(context, CxrEmbeddingsConfig)
    shard = context.partition_key
    encoder, cache, root, images, _ = _cxr_setup(config, project.paths())
    progress = progress_logger(context.log.info, f"cxr {shard}", config.log_every)
    _, counts = image_choice.fill_cxr_shard(encoder, cache, root, images, shard, progress)
    _warn(context, image_choice.undecoded_warning(counts, root, "new_decode_failures"))
    return dg.MaterializeResult(
        metadata={"folder": shard, **image_choice.shard_summary(encoder, counts)}
    )


# EHR + dataset
@dg.asset(
    deps=[_K("cohort"), _K("ehr_features")],
    group_name="embeddings",
    kinds={"parquet"},
    description="EHR vector per stay: train-split mean imputation and standardisation, plus "
    "missingness indicators. Writes ehr_vectors.parquet (stay_id, vector) and "
    "ehr_vectors.stats.json (feature names, train means/stds).",
)
def ehr_vectors(context: dg.AssetExecutionContext, project: ProjectResource) -> dg.MaterializeResult:
    paths = project.paths()
    features = _read(paths, "ehr_features", "ehr_vectors")
    cohort = _read(paths, "cohort", "ehr_vectors", ["stay_id", "split"])
    table, std = ehr_vector_table(features, cohort)
    out = write_parquet_atomic(table, paths.table("ehr_vectors"))
    write_json_atomic(std.to_dict(), paths.data_dir / "ehr_vectors.stats.json")
    if std.n_train == 0:
        context.log.warning("No train stays in ehr_features: vectors are not standardised.")
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(out)), **std.summary(table.num_rows)}
    )


@dg.asset(
    deps=[_K("cohort"), _K("ehr_vectors"), _K("note_embeddings"), _K("cxr_embeddings")],
    group_name="dataset",
    kinds={"parquet"},
    description="One row per cohort stay: labels, split, availability flags and the ehr/notes/"
    "cxr vectors (null where missing or where the X-ray failed to decode), plus age and gender.",
)
def multimodal_dataset(project: ProjectResource) -> dg.MaterializeResult:
    paths = project.paths()
    table = dataset.assemble_dataset(
        _read(paths, "cohort", "multimodal_dataset"),
        paths.table("ehr_vectors"),
        paths.table("note_embeddings"),
        paths.data_dir / "cxr_embeddings",
        labels=built_task_names(parquet_stats(paths.table("cohort"))),
    )
    try:
        dims = dataset.vector_dims(table)
    except ValueError as e:
        raise dg.Failure(f"multimodal_dataset: {e}") from e
    out = write_parquet_atomic(table, paths.table("multimodal_dataset"))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "n_stays": int(table.num_rows),
            "dims": dg.MetadataValue.json(dims),
            "availability_patterns_per_split": dg.MetadataValue.json(dataset.availability_counts(table)),
            "pattern_legend": dataset.PATTERN_LEGEND,
        }
    )
