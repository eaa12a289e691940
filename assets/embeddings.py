"""Per-modality vectors per stay (cached, incremental) and the table the MoE heads train on.

Assets (group `embeddings`): `note_embeddings`, `cxr_embeddings`, `ehr_vectors`;
(group `dataset`): `multimodal_dataset`; (group `scale_out`): `note_embedding_cache` and
`cxr_embedding_cache`, partitioned cache fillers for backfills spread over processes or
machines. The work is the library's: `moe.note_pooling` (16 note_id buckets, leak guard,
recency pooling), `moe.image_choice` (MIMIC-CXR `pNN` folders, leak guard, one image per
stay), `moe.ehr_vectors`, `moe.dataset`. The partitioned assets fill the cache for one
shard, so after a backfill the unpartitioned ones find everything cached (Dagster cannot
mix partitioned and unpartitioned assets in one run, so `*moe_mortality` goes through the
unpartitioned ones). The settings are `moe.embed_config`'s; a step builds the library's
`NoteWork` / `ImageWork` (encoder, cache, inputs) and runs it.
"""

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from moe import dataset, image_choice, note_pooling
from moe.cxr_encoder import CxrEncoder, random_weights_refusal
from moe.ehr_vectors import ehr_vector_table
from moe.embed_config import CXR_ABOUT, NOTE_ABOUT, CxrEmbeddingSettings, NoteEmbeddingSettings
from moe.text_encoder import TextEncoder
from plumbing.atomic import write_json_atomic, write_parquet_atomic
from plumbing.dagster_config import config_from, config_of, launch_checked
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
# The launchpad's settings: the library dataclasses' fields, described and bounded there.
NoteEmbeddingsConfig = config_from(
    "NoteEmbeddingsConfig",
    "Note encoder and stay pooling (defaults: moe.embed_config.NoteEmbeddingSettings).",
    [NoteEmbeddingSettings],
    NOTE_ABOUT,
)
CxrEmbeddingsConfig = config_from(
    "CxrEmbeddingsConfig",
    "X-ray encoder (defaults: moe.embed_config.CxrEmbeddingSettings).",
    [CxrEmbeddingSettings],
    CXR_ABOUT,
)


# Helpers: inputs with a clear error, the work of a step, warnings and metadata.
def _read(paths: ProjectPaths, name: str, asset: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Table `name`, or a Failure saying how to build it for `asset`."""
    return pd.read_parquet(require_table(paths, name, asset), columns=columns)


def _warn(context: dg.AssetExecutionContext, message: str | None) -> None:
    """A WARNING in the run log (the library's line: counts, never patient data)."""
    if message:
        context.log.warning(message)


def _result(
    out: Path, summary: dict[str, Any], t_start: float | None = None
) -> dg.MaterializeResult:
    """Metadata: the output's path, the library's summary and, when timed, the wall time."""
    wall = {} if t_start is None else {"wall_seconds": round(time.perf_counter() - t_start, 2)}
    path = dg.MetadataValue.path(str(out))
    return dg.MaterializeResult(metadata={"path": path, **summary, **wall})


def _notes(context: dg.AssetExecutionContext, paths: ProjectPaths) -> note_pooling.NoteWork:
    """The step's encoder, its cache, the staged note tables and the notes before t0."""
    settings = config_of(context, NoteEmbeddingsConfig).to(NoteEmbeddingSettings)
    try:
        encoder = TextEncoder(**settings.encoder_kwargs())
    except (FileNotFoundError, ValueError) as e:
        raise dg.Failure(str(e)) from e
    notes = _read(paths, "cohort_notes", "note_embeddings", ["stay_id", "note_id", "charttime"])
    cohort = _read(paths, "cohort", "note_embeddings", ["stay_id", "prediction_time"])
    staged = [paths.table(name) for name in note_pooling.NOTE_TABLES]
    return note_pooling.NoteWork.of(settings, encoder, paths.cache_dir, staged, notes, cohort)


def _cxr(context: dg.AssetExecutionContext, paths: ProjectPaths) -> image_choice.ImageWork:
    """The step's encoder (random weights refused on real data), its cache and the images
    before t0."""
    settings = config_of(context, CxrEmbeddingsConfig).to(CxrEmbeddingSettings)
    weights, allowed = settings.cxr_weights, settings.allow_random_weights
    refusal = random_weights_refusal(weights, paths.is_demo, allowed)
    if refusal:
        raise dg.Failure(refusal)
    try:
        encoder = CxrEncoder(**settings.encoder_kwargs())
    except FileNotFoundError as e:
        raise dg.Failure(str(e)) from e
    cxr = _read(paths, "cohort_cxr", "cxr_embeddings", ["stay_id", "dicom_id", "study_time", "path"])
    cohort = _read(paths, "cohort", "cxr_embeddings", ["stay_id", "prediction_time"])
    root = paths.raw_root / "cxr"
    return image_choice.ImageWork.of(settings, encoder, paths.cache_dir, root, cxr, cohort)


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
    paths = project.paths()
    t_start = time.perf_counter()
    work = _notes(context, paths)
    table, counts = work.per_stay(context.log.info)
    out = write_parquet_atomic(table, paths.table("note_embeddings"))
    _warn(context, work.warning(counts))
    return _result(out, work.summary(table.num_rows, counts), t_start)


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
    work = _notes(context, project.paths())
    counts = work.fill(context.partition_key, context.log.info)
    _warn(context, work.warning(counts))
    return dg.MaterializeResult(metadata={"bucket": context.partition_key,
                                          **work.shard_summary(counts)})  # fmt: skip


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
    paths = project.paths()
    t_start = time.perf_counter()
    work = _cxr(context, paths)
    if not work.encoder.pretrained:
        context.log.warning("cxr_weights=random: image features are NOT pretrained (demo only).")
    out_dir = paths.data_dir / "cxr_embeddings"
    counts, per_folder = work.per_stay(out_dir, context.log.info)
    _warn(context, work.warning(counts, "decode_failures"))
    return _result(out_dir, work.summary(counts, per_folder), t_start)


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
    work = _cxr(context, project.paths())
    counts = work.fill(context.partition_key, context.log.info)
    _warn(context, work.warning(counts, "new_decode_failures"))
    return dg.MaterializeResult(metadata={"folder": context.partition_key,
                                          **work.shard_summary(counts)})  # fmt: skip


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
    return _result(out, std.summary(table.num_rows))


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
    return _result(
        out,
        {
            "n_stays": int(table.num_rows),
            "dims": dg.MetadataValue.json(dims),
            "availability_patterns_per_split": dg.MetadataValue.json(dataset.availability_counts(table)),
            "pattern_legend": dataset.PATTERN_LEGEND,
        },
    )
