"""`moe_report`: the comparison report over the three tasks (thin: `moe.report` does it).

Writes `$MOE_DATA_DIR/reports/report.md`, PNG figures beside it and `summary.json`; the
headline table per task and the key figures (small base64 PNGs) go into the Dagster
metadata as Markdown. Metadata holds metrics, counts and plots only.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from plumbing import reuse
from plumbing.dagster_config import config_of, launch_checked
from plumbing.pools import TORCH_POOL
from plumbing.resources import ProjectResource, require_table
from plumbing.settings import materialize_first
from plumbing.tasks import TASK_NAMES, TASKS, Task

KEY_FIGURES = ("robustness", "gates", "roc")


class ReportConfig(Config):
    """Report settings."""

    n_boot: int = Field(
        default=1000, ge=1, description="Bootstrap resamples for intervals and paired tests."
    )
    fractions: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        description="Shares of the test stays with a modality that get it removed (robustness).",
    )
    refit_early_fusion: bool = Field(
        default=True,
        description="Refit early fusion (MoE's settings, cheap) for its robustness curves; "
        "the baselines asset stores predictions, not the fitted baseline.",
    )
    device: str = Field(default="cpu", description="Device for loading/refitting models.")
    figure_px: int = Field(
        default=360, ge=16, description="Longest side of figures embedded in metadata."
    )
    force: bool = Field(
        default=False,
        description="Rebuild even when the models' outputs, the dataset, these settings and the "
        "moe/ code are those the report on disk was built from.",
    )


def report_inputs(
    data_dir: Path, truth: Path | None, tasks: Sequence[str] = TASK_NAMES
) -> list[Path]:
    """Every file the report reads: the dataset, each task's MoE and baseline outputs, truth."""
    files = [data_dir / "multimodal_dataset.parquet"]
    for task in tasks:
        mdir = data_dir / "models" / task
        files += [mdir / "model.pt", mdir / "config.json", mdir / "predictions.parquet"]
        files += sorted((mdir / "baselines").glob("*/predictions.parquet"))
    if truth is not None:
        files.append(truth)
    return files


def _cxr_weights(context: AssetExecutionContext) -> str | None:
    """`cxr_weights` as recorded by the latest `cxr_embeddings` materialization, if any."""
    try:
        ev = context.instance.get_latest_materialization_event(AssetKey("cxr_embeddings"))
    except Exception:  # noqa: BLE001 - an instance without event storage: say we don't know
        return None
    mat = ev.asset_materialization if ev is not None else None
    if mat is None or "cxr_weights" not in mat.metadata:
        return None
    return str(mat.metadata["cxr_weights"].value)


def report_asset(tasks: Sequence[Task] = TASKS) -> AssetsDefinition:
    """`moe_report` over the tasks of `tasks` (the registry's), one section each."""
    names = [t.name for t in tasks]

    @asset(
        name="moe_report",
        deps=[
            *(AssetKey(f"moe_{t}") for t in names),
            *(AssetKey(f"baselines_{t}") for t in names),
            AssetKey("multimodal_dataset"),
        ],
        group_name="report",
        config_schema=launch_checked(ReportConfig),
        kinds={"matplotlib", "markdown"},
        pool=TORCH_POOL,
        description=(
            "Comparison report: per task, MoE vs every baseline and ablation (AUROC, AUPRC with "
            "95% bootstrap CIs, F1 at the val threshold, Brier, ECE), paired bootstrap against "
            "the best baseline, metrics by availability pattern, robustness curves, gate "
            "heatmaps, subgroup AUROC, ROC/calibration curves and a model card; on demo data "
            "the oracle (truth) row. Writes $MOE_DATA_DIR/reports/report.md + PNGs."
        ),
    )
    def _report(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
        config = config_of(context, ReportConfig)
        paths = project.paths()
        require_table(paths, "multimodal_dataset", "moe_report")
        truth = paths.truth_path if paths.is_demo else None
        cxr_weights = _cxr_weights(context)
        out_dir = paths.data_dir / "reports"
        key = reuse.fit_key(
            report_inputs(paths.data_dir, truth, names),
            {"asset": "report", "config": config.model_dump(exclude={"force"}),
             "cxr_weights": cxr_weights, "is_demo": paths.is_demo},
        )
        saved = None if config.force else reuse.reusable(out_dir, key, ("report.md", "summary.json"))
        if saved is not None:
            context.log.info("moe_report: its inputs, settings and code are unchanged; report reused")
            return MaterializeResult(metadata={**saved, "reused": True})
        from moe.plots import png_data_uri  # after the reuse check: matplotlib, torch
        from moe.report import build_report, headline_markdown

        reuse.invalidate(out_dir)
        rep = build_report(
            paths.data_dir,
            truth_path=truth,
            is_demo=paths.is_demo,
            cxr_weights=cxr_weights,
            n_boot=config.n_boot,
            fractions=config.fractions,
            refit_early_fusion=config.refit_early_fusion,
            device=config.device,
            log=context.log.info,
            tasks=names,
        )
        if not rep.tasks:
            raise Failure(
                description=materialize_first(
                    paths.data_dir / "models", "moe_<task>", "moe_report", "holds no MoE predictions"
                )
            )
        meta: dict[str, Any] = {
            "report": MetadataValue.path(str(rep.path)),
            "tasks": len(rep.tasks),
            "figures": len(rep.figures),
        }
        for task, res in rep.tasks.items():
            head = {str(r["model"]): r for r in res.headline.to_dict(orient="records")}
            meta[f"{task}: test metrics"] = MetadataValue.md(headline_markdown(res.headline))
            meta[f"{task}: moe AUROC"] = MetadataValue.float(float(head["moe"]["auroc"]))
            if "oracle" in head:
                meta[f"{task}: oracle AUROC"] = MetadataValue.float(float(head["oracle"]["auroc"]))
            if res.vs_best is not None:
                meta[f"{task}: moe - best baseline AUROC"] = MetadataValue.float(float(res.vs_best["diff"]))
                meta[f"{task}: paired p-value"] = MetadataValue.float(float(res.vs_best["p"]))
            imgs = [
                f"![{task} {k}]({png_data_uri(res.figures[k], config.figure_px)})"
                for k in KEY_FIGURES
                if k in res.figures
            ]
            if imgs:
                meta[f"{task}: figures"] = MetadataValue.md("\n\n".join(imgs))
        reuse.record(out_dir, key, meta)
        return MaterializeResult(metadata={**meta, "reused": False})

    return _report


moe_report = report_asset()
