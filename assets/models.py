"""MoE heads, their ablations and the baselines, one asset per task (thin: `moe.api` does it).

Outputs under `$MOE_DATA_DIR/models/<task>/`:
- `moe_<task>`: `model.pt, config.json, metrics.json, predictions.parquet, roc.png`
- `baselines_<task>`: `baselines/<kind>/predictions.parquet + metrics.json` for each baseline
  kind and each MoE ablation (`moe_no_masking`, `moe_no_dropout`, `moe_single_expert`, `moe_no_ensemble`).
`predictions.parquet`: `stay_id, split, y_true, y_prob` for every stay with a label for the
task (all splits); stays with a null label are left out of that task.
"""


import base64
import io
import json
from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from plumbing import reuse
from plumbing.pools import TORCH_POOL
from plumbing.resources import ProjectResource, require_table
from plumbing.tasks import TASKS, Task

UPSTREAM = "multimodal_dataset"
MOE_OUTPUTS = ("model.pt", "config.json", "metrics.json", "predictions.parquet")
BASELINE_OUTPUTS = ("metrics.json", "predictions.parquet")


class MoETrainConfig(Config):
    """Hyper-parameters of `moe.MoEConfig` shown in the launchpad (defaults match it)."""

    width: int = Field(default=128, description="Shared token width of the modality encoders.")
    expert_hidden: int = Field(default=128, description="Hidden width of each expert MLP.")
    experts_per_subset: int = Field(default=1, description="Experts per modality subset (7 subsets).")
    top_k: int = Field(default=2, description="Experts chosen per stay among the eligible ones.")
    shared_expert: bool = Field(default=True, description="Add an always-on expert over all tokens.")
    proj_dim: int = Field(
        default=64,
        description="Project inputs wider than this onto their top train principal components "
        "(0: off). Applied to the neural baselines too.",
    )
    dropout: float = Field(default=0.1, description="Dropout inside encoders and experts.")
    availability_masking: bool = Field(default=True, description="Mask experts needing absent modalities.")
    modality_dropout: float = Field(default=0.25, description="P(hide an available modality) in training.")
    single_expert: bool = Field(default=False, description="Ablation: one expert, no mixture.")
    lr: float = Field(default=1e-3, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, description="AdamW weight decay.")
    batch_size: int = Field(default=512, description="Mini-batch size.")
    max_epochs: int = Field(default=40, description="Epoch cap.")
    patience: int = Field(default=8, description="Early stopping patience (epochs, val AUPRC).")
    balance_weight: float = Field(default=0.01, description="Load-balancing loss weight.")
    ensemble: int = Field(
        default=3, description="Independently seeded MoEs averaged (mean logit); 1: a single MoE."
    )
    ema: float = Field(default=0.0, description="Weight averaging decay (0: off).")
    seed: int = Field(default=0, description="Seed for init, batches and dropout.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda'.")
    threads: int = Field(default=0, description="torch CPU threads while fitting (0: torch default).")
    n_boot: int = Field(default=1000, description="Bootstrap resamples for the test intervals.")
    force: bool = Field(
        default=False,
        description="Refit even when the dataset, these settings and the moe/ code are those "
        "of the outputs on disk (which are otherwise reused).",
    )

    def moe_config(self) -> dict[str, Any]:
        d = self.model_dump()
        d.pop("n_boot")
        d.pop("force")
        return d


class BaselinesConfig(MoETrainConfig):
    kinds: list[str] = Field(
        default=["ehr_only", "notes_only", "cxr_only", "early_fusion", "late_fusion", "gbm",
                 "fusemoe", "flex_moe", "medfuse"],
        description="Baselines to fit (`moe.baselines.KINDS`; the last three are the "
        "published peers).",
    )
    ablations: list[str] = Field(
        default=["moe_no_masking", "moe_no_dropout", "moe_single_expert", "moe_no_ensemble"],
        description="MoE ablations to fit (same layout as the baselines).",
    )

    def moe_config(self) -> dict[str, Any]:
        d = super().moe_config()
        d.pop("kinds")
        d.pop("ablations")
        return d


def read_dataset(project: ProjectResource, asset_name: str):
    """The upstream table, or a Failure that says how to build it."""
    import pyarrow.parquet as pq

    return pq.read_table(require_table(project.paths(), UPSTREAM, asset_name))


def roc_png(y, p, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=100)
    ax.plot(fpr, tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _ci(m: dict[str, Any], name: str) -> str:
    lo, hi = m[f"{name}_ci"]
    return f"{m[name]:.3f} [{lo:.3f}, {hi:.3f}]"


def _moe_asset(task: str) -> AssetsDefinition:
    name = f"moe_{task}"

    @asset(
        name=name,
        deps=[AssetKey(UPSTREAM)],
        group_name="models",
        kinds={"pytorch"},
        pool=TORCH_POOL,
        description=(
            f"Availability-aware mixture-of-experts for `{task}`: trained on split=train, "
            f"early-stopped on val, evaluated on test. Writes $MOE_DATA_DIR/models/{task}/."
        ),
    )
    def _moe(
        context: AssetExecutionContext, config: MoETrainConfig, project: ProjectResource
    ) -> MaterializeResult:
        out = project.paths().data_dir / "models" / task
        key = reuse.fit_key(
            [project.paths().table(UPSTREAM)],
            {"asset": "moe", "task": task, "config": config.moe_config(), "n_boot": config.n_boot},
        )
        saved = None if config.force else reuse.reusable(out, key, MOE_OUTPUTS)
        if saved is not None:
            context.log.info(f"{name}: dataset, settings and code unchanged; outputs reused")
            return MaterializeResult(metadata={**saved, "reused": True})
        import moe  # after the reuse check: torch and scikit-learn take seconds to import
        from moe.api import pattern_markdown, write_outputs

        table = read_dataset(project, name)
        reuse.invalidate(out)
        model = moe.fit(table, task, config.moe_config())
        pred, met = write_outputs(out, model, table, task, n_boot=config.n_boot)
        test = pred[pred.split == "test"]
        meta: dict[str, Any] = {
            "dir": MetadataValue.path(str(out)),
            "stays (labelled)": len(pred),
            "epochs": model.history.get("epochs_run"),
            "train seconds": round(float(model.history.get("seconds", 0.0)), 1),
        }
        if "test" in met:
            m = met["test"]
            meta.update({
                "test AUROC": MetadataValue.float(float(m["auroc"])),
                "test AUPRC": MetadataValue.float(float(m["auprc"])),
                "test AUROC (95% CI)": _ci(m, "auroc"),
                "test AUPRC (95% CI)": _ci(m, "auprc"),
                "test brier": MetadataValue.float(float(m["brier"])),
                "test ECE": MetadataValue.float(float(m["ece"])),
                "test by availability": MetadataValue.md(pattern_markdown(met["test_by_pattern"])),
            })
            if test.y_true.nunique() == 2:
                png = roc_png(test.y_true, test.y_prob, f"{task}: test ROC")
                (out / "roc.png").write_bytes(png)
                b64 = base64.b64encode(png).decode()
                meta["test ROC"] = MetadataValue.md(f"![ROC](data:image/png;base64,{b64})")
        reuse.record(out, key, meta)
        return MaterializeResult(metadata={**meta, "reused": False})

    return _moe


def _baselines_asset(task: str) -> AssetsDefinition:
    name = f"baselines_{task}"

    @asset(
        name=name,
        deps=[AssetKey(UPSTREAM)],
        group_name="models",
        kinds={"pytorch", "scikitlearn"},
        pool=TORCH_POOL,
        description=(
            f"Baselines for `{task}` on the MoE's splits and vectors (unimodal, early and late "
            f"fusion, gradient boosting) and the MoE ablations. Writes "
            f"$MOE_DATA_DIR/models/{task}/baselines/<kind>/."
        ),
    )
    def _baselines(
        context: AssetExecutionContext, config: BaselinesConfig, project: ProjectResource
    ) -> MaterializeResult:
        root = project.paths().data_dir / "models" / task / "baselines"
        rows = ["| model | test AUROC | test AUPRC |", "|---|---:|---:|"]
        summary: dict[str, Any] = {}
        table = None
        reused: list[str] = []
        for kind in [*config.kinds, *config.ablations]:
            out = root / kind
            key = reuse.fit_key(
                [project.paths().table(UPSTREAM)],
                {"asset": "baseline", "task": task, "kind": kind,
                 "config": config.moe_config(), "n_boot": config.n_boot},
            )
            if not config.force and reuse.reusable(out, key, BASELINE_OUTPUTS) is not None:
                met = json.loads((out / "metrics.json").read_text())
                reused.append(kind)
            else:
                context.log.info(f"{task}: fitting {kind}")
                import moe
                from moe.api import fit_ablation, write_outputs

                if table is None:
                    table = read_dataset(project, name)
                reuse.invalidate(out)
                if kind.startswith("moe_"):
                    model: Any = fit_ablation(table, task, kind, config.moe_config())
                else:
                    model = moe.fit_baseline(table, task, kind, config.moe_config())
                _, met = write_outputs(out, model, table, task, n_boot=config.n_boot)
                reuse.record(out, key)
            if "test" in met:
                m = met["test"]
                rows.append(f"| {kind} | {_ci(m, 'auroc')} | {_ci(m, 'auprc')} |")
                summary[kind] = {"auroc": m["auroc"], "auprc": m["auprc"]}
        if reused:
            context.log.info(f"{task}: dataset, settings and code unchanged for {reused}; reused")
        (root / "summary.json").write_text(json.dumps(summary, indent=2))
        return MaterializeResult(
            metadata={
                "dir": MetadataValue.path(str(root)),
                "test": MetadataValue.md("\n".join(rows)),
                "reused": MetadataValue.json(reused),
            }
        )

    return _baselines


def task_assets(tasks: Sequence[Task] = TASKS) -> list[AssetsDefinition]:
    """`moe_<task>` and `baselines_<task>` for each task of `tasks` (the registry's)."""
    return [a for t in tasks for a in (_moe_asset(t.name), _baselines_asset(t.name))]


model_assets = task_assets()
BY_NAME = {a.key.to_user_string(): a for a in model_assets}  # e.g. BY_NAME["moe_mortality"]
