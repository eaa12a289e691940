"""Named jobs for the common runs, as users see them in the UI and the CLI."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

# The partitioned cache-filling assets (group scale_out) run in backfills of their own:
# Dagster runs one partitions definition per run.
_unpartitioned = AssetSelection.all() - AssetSelection.groups("scale_out")

cohort_refresh_job = define_asset_job(
    "cohort_refresh",
    selection=AssetSelection.groups("sources", "staging", "cohort"),
    description="Re-read the raw files: staging tables, cohort, EHR features, eligible notes and X-rays.",
)

embed_job = define_asset_job(
    "embed",
    selection=AssetSelection.groups("embeddings", "dataset"),
    description="Embed new notes and images (cached) and rebuild the multimodal dataset.",
)

train_all_job = define_asset_job(
    "train_all",
    selection=AssetSelection.groups("models", "report"),
    description="Train the three MoE heads, the baselines and ablations, and write the report.",
)

full_pipeline_job = define_asset_job(
    "full_pipeline",
    selection=_unpartitioned,
    description="Everything, raw files to report (what `make demo` runs).",
)

cxr_backfill_job = define_asset_job(
    "cxr_embedding_backfill",
    selection=AssetSelection.assets("cxr_embedding_cache"),
    description="Fill the X-ray embedding cache one MIMIC-CXR folder (p10..p19) per run.",
)

note_backfill_job = define_asset_job(
    "note_embedding_backfill",
    selection=AssetSelection.assets("note_embedding_cache"),
    description="Fill the note embedding cache one hash bucket per run.",
)

ALL_JOBS = [
    cohort_refresh_job,
    embed_job,
    train_all_job,
    full_pipeline_job,
    cxr_backfill_job,
    note_backfill_job,
]
