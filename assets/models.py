"""MoE heads, their ablations and the baselines, one asset per task (thin: `moe.api` does it).

Outputs under `$MOE_DATA_DIR/models/<task>/`:
- `moe_<task>`: `model.pt, config.json, metrics.json, predictions.parquet, roc.png`
- `baselines_<task>`: `baselines/<kind>/predictions.parquet + metrics.json` for each baseline
  kind and each MoE ablation (`moe_no_masking`, `moe_no_dropout`, `moe_single_expert`, `moe_no_ensemble`,
  `moe_no_linear`).
`predictions.parquet`: `stay_id, split, y_true, y_prob` for every stay with a label for the
task (all splits); stays with a null label are left out of that task.
"""


import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from moe.config import BASELINE_KINDS, ModelConfig, TrainConfig
from plumbing import reuse
from plumbing.atomic import write_json_atomic
from plumbing.dagster_config import About, GeneratedConfig, config_from, config_of, launch_checked
from plumbing.pools import TORCH_POOL
from plumbing.resources import ProjectResource, require_table
from plumbing.tasks import TASKS, Task

UPSTREAM = "multimodal_dataset"
MOE_OUTPUTS = ("model.pt", "config.json", "metrics.json", "predictions.parquet")
BASELINE_OUTPUTS = ("metrics.json", "predictions.parquet")


def _top_k_fits(c: GeneratedConfig) -> str | None:
    routed = len(ModelConfig().subsets) * c.experts_per_subset
    if c.top_k > routed:
        return f"top_k ({c.top_k}) is more than the {routed} routed experts (7 subsets x experts_per_subset)"
    return None


# The launchpad's settings of `moe.fit`: every field of ModelConfig and TrainConfig (names,
# types and defaults from there), with a description and bounds each.
MoETrainConfig = config_from(
    "MoETrainConfig",
    "Settings of `moe.fit` (moe.model.ModelConfig + moe.train.TrainConfig defaults).",
    [ModelConfig, TrainConfig],
    {
        # architecture (ModelConfig)
        "width": About("Shared token width of the modality encoders.", ge=1),
        "expert_hidden": About("Hidden width of each expert MLP.", ge=1),
        "expert_layers": About("Hidden layers of each expert MLP.", ge=1, le=4),
        "experts_per_subset": About("Experts per modality subset (7 subsets).", ge=1),
        "top_k": About("Experts chosen per stay among the eligible ones (<= routed experts).", ge=1),
        "dropout": About("Dropout inside encoders and experts.", ge=0, lt=1),
        "input_dropout": About("Dropout on the standardised input vectors.", ge=0, lt=1),
        "encoder_layers": About(
            "0: Linear (linear tokens); 1: Linear -> GELU; 2: Linear -> GELU -> Linear -> GELU.",
            ge=0, le=2,
        ),
        "proj_dim": About(
            "Project inputs wider than this onto their top train principal components "
            "(0: off). Applied to the neural baselines too; used when proj_dim_choice is "
            "'fixed' (and when 'validation' cannot decide).",
            ge=0,
        ),
        "availability_masking": About("Mask experts needing absent modalities."),
        "single_expert": About("Ablation: one expert, no mixture."),
        "shared_expert": About("Add an always-on expert over all tokens."),
        "linear_weight": About(
            "Weight of the ridge-fitted linear expert in the final logit, against the mean of "
            "the neural MoEs (moe.linear_expert); 0: neural experts only. Chosen on the "
            "validation stays unless linear_weight_choice is 'fixed'.",
            ge=0, le=1,
        ),
        # training (TrainConfig)
        "modality_dropout": About("P(hide an available modality) in training.", ge=0, lt=1),
        "lr": About("AdamW learning rate.", gt=0),
        "weight_decay": About("AdamW weight decay.", ge=0),
        "batch_size": About("Mini-batch size.", ge=1),
        "max_epochs": About("Epoch cap.", ge=1),
        "patience": About("Early stopping patience (epochs, val AUPRC).", ge=1),
        "balance_weight": About("The MoE's load-balancing loss weight.", ge=0),
        "peer_balance_weight": About("Routing loss weight of the peers FuseMoE and Flex-MoE.", ge=0),
        "ema": About("Weight averaging decay (0: off).", ge=0, lt=1),
        "ensemble": About("Independently seeded MoEs averaged (mean logit); 1: a single MoE.", ge=1),
        "class_weight": About("'balanced' (pos_weight = n_neg / n_pos) or 'none'."),
        "prior_correction": About("Subtract log(pos_weight) from the logits at inference."),
        "calibration": About(
            "MoE only. 'platt': refit sigmoid(a * logit + b) on the validation stays (a > 0: "
            "AUROC unchanged, probabilities calibrated); 'none'."
        ),
        "linear_weight_choice": About(
            "'validation': choose the linear expert's weight on the validation stays (least "
            "log-loss of the Platt-scaled blend, weights 0, 0.125, ..., 1; linear_weight is the "
            "fallback); 'fixed': use linear_weight."
        ),
        "proj_dim_choice": About(
            "'ridge': the width in proj_dim_candidates whose linear expert has the least "
            "leave-one-out error on the train stays, for the MoE and the neural baselines "
            "alike; 'validation': fit the first MoE once per width and keep the least "
            "Platt-scaled validation log-loss (MoE only); 'fixed': use proj_dim."
        ),
        "proj_dim_candidates": About(
            "Widths proj_dim_choice 'ridge' or 'validation' tries (0: no projection).", ge=0
        ),
        "seed": About("Seed for init, batches and dropout.", ge=0),
        "device": About("'auto' (CUDA when present), 'cpu', 'cuda'."),
        "threads": About("torch CPU threads while fitting (0: torch default).", ge=0),
    },
    exclude=("subsets",),  # a tuple of modality tuples: set it in Python (moe.fit), not here
    extra={
        "n_boot": (int, Field(default=1000, ge=1, description="Bootstrap resamples for the test intervals.")),
        "force": (
            bool,
            Field(
                default=False,
                description="Refit even when the dataset, these settings and the moe/ code are "
                "those of the outputs on disk (which are otherwise reused).",
            ),
        ),
    },
    check=_top_k_fits,
)
FIT_FIELDS = frozenset(f.name for c in (ModelConfig, TrainConfig) for f in fields(c)) - {"subsets"}


def moe_config(config: GeneratedConfig) -> dict[str, Any]:
    """The settings `moe.fit` takes (the launchpad-only fields left out)."""
    return {k: v for k, v in config.model_dump().items() if k in FIT_FIELDS}


class BaselinesConfig(MoETrainConfig):  # type: ignore[misc, valid-type]
    """The MoE's settings (shared by the neural baselines and ablations), and which to fit."""

    kinds: list[str] = Field(
        default=list(BASELINE_KINDS),
        description="Baselines to fit (`moe.baselines.KINDS`; `linear` is the MoE's linear "
        "expert alone; the last three are the published peers).",
    )
    ablations: list[str] = Field(
        default=["moe_no_masking", "moe_no_dropout", "moe_single_expert", "moe_no_ensemble",
                 "moe_no_linear"],
        description="MoE ablations to fit (same layout as the baselines).",
    )


def read_dataset(project: ProjectResource, asset_name: str):
    """The upstream table, or a Failure that says how to build it."""
    import pyarrow.parquet as pq

    return pq.read_table(require_table(project.paths(), UPSTREAM, asset_name))


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
        config_schema=launch_checked(MoETrainConfig),
        description=(
            f"Availability-aware mixture-of-experts for `{task}`: trained on split=train, "
            f"early-stopped on val, evaluated on test. Writes $MOE_DATA_DIR/models/{task}/."
        ),
    )
    def _moe(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
        config = config_of(context, MoETrainConfig)
        out = project.paths().data_dir / "models" / task
        key = reuse.fit_key(
            [project.paths().table(UPSTREAM)],
            {"asset": "moe", "task": task, "config": moe_config(config), "n_boot": config.n_boot},
        )
        saved = None if config.force else reuse.reusable(out, key, MOE_OUTPUTS)
        if saved is not None:
            context.log.info(f"{name}: dataset, settings and code unchanged; outputs reused")
            return MaterializeResult(metadata={**saved, "reused": True})
        import moe  # after the reuse check: torch and scikit-learn take seconds to import
        from moe.api import write_outputs
        from moe.plots import png_data_uri, roc_curves
        from moe.report import pattern_markdown

        table = read_dataset(project, name)
        reuse.invalidate(out)
        model = moe.fit(table, task, moe_config(config))
        pred, met = write_outputs(out, model, table, task, n_boot=config.n_boot)
        test = pred[pred.split == "test"]
        meta: dict[str, Any] = {
            "dir": MetadataValue.path(str(out)),
            "stays (labelled)": len(pred),
            "epochs": model.history.get("epochs_run"),
            "train seconds": round(float(model.history.get("seconds", 0.0)), 1),
            # the input projection's width, and how the fit chose it (proj_dim_choice)
            "input width (proj_dim)": int(model.config.proj_dim),
            "input width chosen by": model.history.get("proj_dim", {}).get("rule", "setting"),
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
                "test by availability": MetadataValue.md(
                    pattern_markdown(met["test_by_pattern"], metrics=("auroc", "auprc"))
                ),
            })
            if test.y_true.nunique() == 2:
                roc = roc_curves({"moe": pred}, out / "roc.png", f"{task}: test ROC")
                meta["test ROC"] = MetadataValue.md(f"![ROC]({png_data_uri(roc)})")
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
        config_schema=launch_checked(BaselinesConfig),
        description=(
            f"Baselines for `{task}` on the MoE's splits and vectors (unimodal, early and late "
            f"fusion, gradient boosting) and the MoE ablations. Writes "
            f"$MOE_DATA_DIR/models/{task}/baselines/<kind>/."
        ),
    )
    def _baselines(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
        config = config_of(context, BaselinesConfig)
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
                 "config": moe_config(config), "n_boot": config.n_boot},
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
                    model: Any = fit_ablation(table, task, kind, moe_config(config))
                else:
                    model = moe.fit_baseline(table, task, kind, moe_config(config))
                _, met = write_outputs(out, model, table, task, n_boot=config.n_boot)
                reuse.record(out, key)
            if "test" in met:
                m = met["test"]
                rows.append(f"| {kind} | {_ci(m, 'auroc')} | {_ci(m, 'auprc')} |")
                summary[kind] = {"auroc": m["auroc"], "auprc": m["auprc"]}
        if reused:
            context.log.info(f"{task}: dataset, settings and code unchanged for {reused}; reused")
        write_json_atomic(summary, root / "summary.json", sort_keys=False)
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
