"""The comparison report: `$MOE_DATA_DIR/reports/report.md` plus PNG figures.

    from moe.report import build_report
    rep = build_report(data_dir)            # reads models/<task>/..., multimodal_dataset
    rep.markdown, rep.figures, rep.tasks["mortality"].headline

Per task: a short model card; MoE vs every baseline and ablation (AUROC and AUPRC with
bootstrap 95% intervals, F1 at the val-chosen threshold, Brier, ECE; on demo data also
the oracle row, the AUROC ceiling of the generator's truth probabilities on the same test
stays); a paired bootstrap of the MoE against the best baseline, and against early fusion
on the test stays that miss a modality; the same metrics by availability pattern;
robustness curves (MoE vs early fusion); mean gate weight per expert by pattern; AUROC by
sex and age band; ROC and calibration curves.

`evaluate_task` does the numbers for one task from prediction frames and fitted models, so
the quality benchmark (`bench/quality.py`) shares it. The report's text holds metrics and
counts only: no stay ids, no patient data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe import evaluation as ev
from moe import plots
from moe.data import MODALITIES, TASKS, Table, to_arrow
from plumbing.atomic import write_json_atomic, write_text_atomic
from plumbing.tasks import TASKS as REGISTRY

TASK_TEXT = {t.name: t.predicts for t in REGISTRY}


@dataclass
class TaskResult:
    task: str
    headline: pd.DataFrame
    best_baseline: str | None
    vs_best: dict[str, Any] | None
    vs_early_fusion_missing: dict[str, Any] | None
    patterns: pd.DataFrame
    robustness: dict[str, pd.DataFrame]
    gates: pd.DataFrame | None
    subgroups: pd.DataFrame
    card: dict[str, Any]
    figures: dict[str, Path] = field(default_factory=dict)


@dataclass
class Report:
    path: Path
    markdown: str
    tasks: dict[str, TaskResult]
    figures: dict[str, Path]


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
def _order(names: Sequence[str]) -> list[str]:
    from moe.api import ABLATIONS, KINDS

    known = [k for k in (*KINDS, *ABLATIONS) if k in names]
    return known + sorted(n for n in names if n not in known)


def read_predictions(data_dir: str | Path, task: str) -> dict[str, pd.DataFrame]:
    """`moe` from `models/<task>/predictions.parquet`, then each baseline and ablation from
    `models/<task>/baselines/<kind>/predictions.parquet` (baselines first, in KINDS order)."""
    root = Path(data_dir) / "models" / task
    out: dict[str, pd.DataFrame] = {}
    if (root / "predictions.parquet").is_file():
        out["moe"] = pd.read_parquet(root / "predictions.parquet")
    base = root / "baselines"
    kinds = [d.name for d in base.iterdir() if (d / "predictions.parquet").is_file()] \
        if base.is_dir() else []
    for k in _order(kinds):
        out[k] = pd.read_parquet(base / k / "predictions.parquet")
    return out


def _card(table: pd.DataFrame, task: str) -> dict[str, Any]:
    lab = pd.to_numeric(table[task], errors="coerce")
    card: dict[str, Any] = {"stays": int(len(table)), "labelled": int(lab.notna().sum())}
    for split in ("train", "val", "test"):
        s = (table["split"] == split) & lab.notna()
        card[f"n_{split}"] = int(s.sum())
        card[f"prevalence_{split}"] = float(lab[s].mean()) if s.any() else float("nan")
    for m in MODALITIES:
        col = f"has_{m}"
        card[f"has_{m}"] = float(table[col].fillna(False).astype(bool).mean()) \
            if col in table else 0.0
    return card


# ---------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------
def evaluate_task(
    table: Table,
    task: str,
    preds: Mapping[str, pd.DataFrame],
    moe_model: Any = None,
    early_fusion: Any = None,
    truth: pd.DataFrame | None = None,
    n_boot: int = 1000,
    fractions: Sequence[float] = ev.FRACTIONS,
    seed: int = 0,
    others: Mapping[str, Any] | None = None,
) -> TaskResult:
    """All of one task's numbers. `preds` must hold `moe`; `moe_model` (a fitted MoE) gives
    the gate weights and, with `early_fusion` and `others` ({name: fitted model}, e.g. the
    peers; any model with `predict_proba(table, drop=...)`), the robustness curves."""
    if "moe" not in preds:
        raise ValueError(f"{task}: no MoE predictions")
    df = to_arrow(table).to_pandas()
    preds = {k: ev.attach_patterns(v, df) for k, v in preds.items()}
    rows = dict(preds)
    if truth is not None:
        orc = ev.oracle_prediction(truth, preds["moe"], task)
        if orc is not None and len(orc):
            rows["oracle"] = orc
    headline = ev.headline_table(rows, n_boot=n_boot, seed=seed)
    best = ev.best_baseline(headline)
    vs_best = ev.paired_comparison(preds["moe"], preds[best], n_boot=n_boot, seed=seed) \
        if best else None
    vs_ef = None
    if "early_fusion" in preds:
        al = ev.aligned_test(preds["moe"], preds["early_fusion"])
        miss = ev.missing_modality_rows(al)
        if miss.any():
            vs_ef = ev.paired_comparison(preds["moe"], preds["early_fusion"], n_boot=n_boot,
                                         seed=seed, rows=miss)
    patterns = ev.pattern_table(rows)
    robustness: dict[str, pd.DataFrame] = {}
    models = {"moe": moe_model, "early_fusion": early_fusion, **(others or {})}
    test = ev.test_rows(df, task)
    for m in MODALITIES:
        col = f"has_{m}"
        if col not in test or not test[col].fillna(False).astype(bool).any():
            continue
        for name, model in models.items():
            if model is not None:
                robustness[f"{name}: {m}"] = ev.robustness_curve(model, df, task, m, fractions,
                                                                 seed=seed)
    gates = ev.gate_by_pattern(moe_model, df, task) \
        if moe_model is not None and hasattr(moe_model, "gate_weights") else None
    sub_models = {k: v for k, v in preds.items() if k in ("moe", "early_fusion", best)}
    subgroups = ev.subgroup_table(sub_models, df)
    return TaskResult(task, headline, best, vs_best, vs_ef, patterns, robustness, gates,
                      subgroups, _card(df, task))


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
def _f(x: Any, nd: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{v:.{nd}f}" if np.isfinite(v) else "n/a"


def headline_markdown(headline: pd.DataFrame) -> str:
    lines = [
        "| model | AUROC [95% CI] | AUPRC [95% CI] | F1 (val thr.) | Brier | ECE | n test |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in headline.itertuples(index=False):
        model = str(r.model)
        name = f"**{model}**" if model == "moe" else (
            f"*{model} (truth, ceiling)*" if model == "oracle" else model)
        lines.append(
            f"| {name} | {_f(r.auroc)} [{_f(r.auroc_lo)}, {_f(r.auroc_hi)}] | "
            f"{_f(r.auprc)} [{_f(r.auprc_lo)}, {_f(r.auprc_hi)}] | {_f(r.f1)} | "
            f"{_f(r.brier)} | {_f(r.ece)} | {r.n} |"
        )
    return "\n".join(lines)


def _p(p: Any) -> str:
    v = float(p)
    return "n/a" if not np.isfinite(v) else ("< 0.001" if v < 0.001 else f"= {v:.3f}")


def comparison_sentence(c: dict[str, Any] | None, a: str, b: str, where: str = "") -> str:
    if c is None:
        return f"No {b} to compare with."
    verdict = {"no difference": "no difference", "a better": f"{a} better",
               "b better": f"{b} better"}[c["verdict"]]
    return (f"{a} − {b}{where}: ΔAUROC = {_f(c['diff'])} [95% CI {_f(c['lo'])}, "
            f"{_f(c['hi'])}], p {_p(c['p'])}, n = {c['n']} → **{verdict}**.")


METRIC_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier"}


def pattern_markdown(
    patterns: pd.DataFrame | Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("auroc",)
) -> str:
    """Test metrics by availability pattern, most modalities first: `n`, `prevalence`, then
    a column per model and metric. `patterns`: `evaluation.pattern_table`'s frame, or
    records of one model without a `model` key (`api.metrics_of`'s `test_by_pattern`).
    One metric: a column per model; one model: a column per metric."""
    df = pd.DataFrame(patterns)
    if df.empty:
        return "_no test stays_"
    if "model" not in df.columns:
        df = df.assign(model="")
    models = list(df["model"].unique())

    def head(model: str, metric: str) -> str:
        if len(metrics) == 1:
            return model
        return METRIC_NAMES[metric] if len(models) == 1 else f"{model} {METRIC_NAMES[metric]}"

    cols = [(m, k) for m in models for k in metrics]
    info = df[df.model == models[0]].set_index("pattern")[["n", "prevalence"]]
    lines = ["| pattern | n | prevalence | " + " | ".join(head(m, k) for m, k in cols) + " |",
             "|---|---:|---:|" + "---:|" * len(cols)]
    values = df.set_index(["pattern", "model"])
    for pat in sorted(df["pattern"].unique(), key=lambda p: (-len(str(p)), str(p))):
        n = info.loc[pat, "n"] if pat in info.index else 0
        prev = info.loc[pat, "prevalence"] if pat in info.index else float("nan")
        cells = [_f(values.loc[(pat, m), k]) if (pat, m) in values.index else "n/a"
                 for m, k in cols]
        lines.append(f"| {pat} | {n} | {_f(prev)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robustness_markdown(curves: Mapping[str, pd.DataFrame]) -> str:
    if not curves:
        return "_no robustness curves (no fitted models given)_"
    labels = list(curves)
    fr = curves[labels[0]]["fraction"].tolist()
    lines = ["| % removed | " + " | ".join(labels) + " |", "|---:|" + "---:|" * len(labels)]
    for i, f in enumerate(fr):
        lines.append(f"| {100 * f:.0f}% | " + " | ".join(_f(curves[k]["auroc"].iloc[i])
                                                          for k in labels) + " |")
    lines.append("| drop 0→100% | " + " | ".join(_f(ev.curve_drop(curves[k]))
                                                  for k in labels) + " |")
    return "\n".join(lines)


def gates_markdown(gates: pd.DataFrame | None) -> str:
    if gates is None or gates.empty:
        return "_no gate weights_"
    cols = [c for c in gates.columns if c != "n"]
    lines = ["| pattern | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for pat, r in gates.iterrows():
        lines.append(f"| {pat} | {int(r['n'])} | " + " | ".join(_f(r[c], 2) for c in cols) + " |")
    return "\n".join(lines)


def subgroup_markdown(sub: pd.DataFrame) -> str:
    if sub.empty:
        return "_no subgroups_"
    models = list(sub["model"].unique())
    first = sub[sub.model == models[0]]
    lines = ["| group | subgroup | n | events | " + " | ".join(f"{m} AUROC" for m in models)
             + " |", "|---|---|---:|---:|" + "---:|" * len(models)]
    for r in first.itertuples(index=False):
        cells = []
        for m in models:
            v = sub[(sub.model == m) & (sub.group == r.group) & (sub.subgroup == r.subgroup)]
            cells.append(_f(v["auroc"].iloc[0]) if len(v) else "n/a")
        lines.append(f"| {r.group} | {r.subgroup} | {r.n} | {r.n_pos} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def card_markdown(res: TaskResult, is_demo: bool, cxr_note: str) -> str:
    c = res.card
    data = (
        f"{c['stays']} stays, {c['labelled']} with a `{res.task}` label; train/val/test "
        f"{c['n_train']}/{c['n_val']}/{c['n_test']} (prevalence {_f(c['prevalence_train'])}/"
        f"{_f(c['prevalence_val'])}/{_f(c['prevalence_test'])}). Modalities present: EHR "
        f"{100 * c['has_ehr']:.0f}%, notes {100 * c['has_notes']:.0f}%, CXR "
        f"{100 * c['has_cxr']:.0f}% of stays."
    )
    source = ("synthetic MIMIC-shaped demo data (generator with known truth)" if is_demo
              else "MIMIC-IV, MIMIC-IV-Note and MIMIC-CXR-JPG (PhysioNet credentialed access)")
    return "\n".join([
        f"**Model card — `{res.task}`.** Predicts {TASK_TEXT.get(res.task, res.task)}, from "
        "the EHR, notes and chest X-ray data available before the prediction time; a gate "
        "routes each stay to experts for the modality subsets it actually has.",
        "",
        f"- *Data*: {source}. {data}",
        f"- *Features*: {cxr_note}",
        "- *Intended use*: research on multimodal risk models with missing modalities "
        "(comparing methods, studying robustness); not for clinical decisions.",
        "- *Limits*: single-centre data (one hospital's ICU), retrospective; labels and "
        "availability follow documentation practice; calibration may shift across sites "
        "and years; subgroup estimates on small groups are noisy (see n); "
        + ("synthetic data say nothing about clinical performance." if is_demo else
           "not validated prospectively."),
    ])


def task_markdown(res: TaskResult, is_demo: bool, cxr_note: str, fig_names: Mapping[str, str]
                  ) -> str:
    parts = [f"## {res.task}", "", card_markdown(res, is_demo, cxr_note), "",
             "### Test metrics", "",
             "F1 at the threshold that maximises F1 on val; intervals: bootstrap percentile "
             "95% over test stays.", "", headline_markdown(res.headline), ""]
    if "oracle" in set(res.headline["model"]):
        parts += ["The oracle row scores the generator's true probabilities on the same test "
                  "stays: the AUROC ceiling for these data.", ""]
    parts += [
        "### Paired bootstrap", "",
        "- " + comparison_sentence(res.vs_best, "moe", res.best_baseline or "baseline",
                                   " (best baseline by test AUROC)"),
        "- " + comparison_sentence(res.vs_early_fusion_missing, "moe", "early_fusion",
                                   " on test stays missing at least one modality"),
        "",
        "### By availability pattern (test AUROC)", "",
        "E = EHR, N = notes, C = chest X-ray.", "", pattern_markdown(res.patterns), "",
        "### Robustness: AUROC as a modality is removed", "",
        "The modality is hidden for a growing random share of the test stays that have it "
        "(nested subsets). Early fusion is refit with the MoE's training settings when the "
        "fitted baseline is not stored; the peers (`fusemoe`, `flex_moe`, `medfuse`) are "
        "loaded from their saved models.", "",
        robustness_markdown(res.robustness), "",
    ]
    for key, title in (("robustness", "robustness"), ("gates", "gate weights"),
                       ("roc", "ROC"), ("calibration", "calibration"), ("subgroups",
                                                                        "subgroups")):
        if key == "gates":
            parts += ["### Mean gate weight per expert by availability pattern (test)", "",
                      gates_markdown(res.gates), ""]
        if key == "subgroups":
            parts += ["### Subgroups (test AUROC)", "", subgroup_markdown(res.subgroups), ""]
        if key in fig_names:
            parts += [f"![{res.task} {title}]({fig_names[key]})", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# Figures and the whole report
# ---------------------------------------------------------------------------------------
def task_figures(res: TaskResult, preds: Mapping[str, pd.DataFrame], out_dir: Path
                 ) -> dict[str, Path]:
    t = res.task
    fig: dict[str, Path] = {}
    show = {k: v for k, v in preds.items() if k in ("moe", "early_fusion", "late_fusion",
                                                    "gbm", res.best_baseline)}
    fig["roc"] = plots.roc_curves(preds, out_dir / f"{t}_roc.png", f"{t}: test ROC")
    fig["calibration"] = plots.calibration_curves(show, out_dir / f"{t}_calibration.png",
                                                  f"{t}: calibration (test)")
    if res.robustness:
        fig["robustness"] = plots.robustness_plot(
            res.robustness, out_dir / f"{t}_robustness.png", f"{t}: AUROC as a modality is removed")
    if res.gates is not None and not res.gates.empty:
        fig["gates"] = plots.gate_heatmap(res.gates, out_dir / f"{t}_gates.png",
                                          f"{t}: mean gate weight by pattern")
    if not res.subgroups.empty:
        fig["subgroups"] = plots.subgroup_plot(res.subgroups, out_dir / f"{t}_subgroups.png",
                                               f"{t}: AUROC by subgroup")
    return fig


def cxr_note_of(weights_desc: str | None, is_demo: bool) -> str:
    if weights_desc is None:
        return ("EHR aggregates, sentence-transformer note embeddings, DenseNet-121 CXR "
                "features (cxr weights: see cxr_embeddings metadata).")
    if "random" in weights_desc.lower():
        return ("EHR aggregates, sentence-transformer note embeddings; **CXR features come "
                "from a randomly initialised DenseNet-121 (not pretrained)**, so the image "
                "modality carries little of what a pretrained encoder would see.")
    return f"EHR aggregates, sentence-transformer note embeddings, CXR: {weights_desc}."


def build_report(
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    tasks: Sequence[str] = TASKS,
    truth_path: str | Path | None = None,
    is_demo: bool | None = None,
    cxr_weights: str | None = None,
    n_boot: int = 1000,
    fractions: Sequence[float] = ev.FRACTIONS,
    refit_early_fusion: bool = True,
    device: str = "cpu",
    table: Table | None = None,
    log: Any = None,
) -> Report:
    """Read the model folders under `data_dir/models/` and `multimodal_dataset.parquet`,
    write `out_dir` (default `data_dir/reports`)/report.md + PNGs. Tasks without MoE
    predictions are skipped. `truth_path` (demo): adds the oracle row."""
    import moe.api
    from moe.baselines import load_baseline
    from moe.peers import PEER_KINDS

    data_dir = Path(data_dir)
    out = Path(out_dir) if out_dir is not None else data_dir / "reports"
    out.mkdir(parents=True, exist_ok=True)
    if table is None:
        import pyarrow.parquet as pq

        table = pq.read_table(data_dir / "multimodal_dataset.parquet")
    truth = None
    if truth_path is not None and Path(truth_path).is_file():
        truth = pd.read_parquet(truth_path)
    demo = bool(truth is not None) if is_demo is None else is_demo
    note = cxr_note_of(cxr_weights, demo)
    results: dict[str, TaskResult] = {}
    figures: dict[str, Path] = {}
    sections = []
    for task in tasks:
        preds = read_predictions(data_dir, task)
        if "moe" not in preds:
            if log:
                log(f"{task}: no MoE predictions under {data_dir / 'models' / task}; skipped")
            continue
        mdir = data_dir / "models" / task
        moe_model = moe.api.load(mdir, device=device) if (mdir / "model.pt").is_file() else None
        ef = None
        if refit_early_fusion and "early_fusion" in preds and moe_model is not None:
            if log:
                log(f"{task}: refitting early fusion for the robustness curves")
            cfg = moe_model.config.to_dict()
            cfg["device"] = device
            ef = moe.api.fit_baseline(table, task, "early_fusion", cfg)
        peers = {k: load_baseline(mdir / "baselines" / k, device=device) for k in PEER_KINDS
                 if k in preds and (mdir / "baselines" / k / "model.pt").is_file()}
        if log:
            log(f"{task}: evaluating {len(preds)} models")
        res = evaluate_task(table, task, preds, moe_model, ef, truth, n_boot, fractions,
                            others=peers)
        res.figures = task_figures(res, {**preds}, out)
        figures.update({f"{task}_{k}": v for k, v in res.figures.items()})
        results[task] = res
        sections.append(task_markdown(res, demo, note, {k: v.name for k, v in
                                                        res.figures.items()}))
    head = [
        "# MoE-Health report", "",
        f"Data: {'synthetic demo (known truth)' if demo else 'MIMIC-IV'}. Tasks: "
        + (", ".join(results) or "none") + f". Bootstrap resamples: {n_boot}.", "",
        f"Features: {note}", "",
        "Models: `moe` (availability-aware mixture of experts blended with its linear expert), "
        "baselines (`ehr_only`, `notes_only`, `cxr_only`, `early_fusion`, `late_fusion`, `gbm`, "
        "`linear`: the MoE's linear expert alone), published peers re-implemented on the same "
        "vectors (`fusemoe`, `flex_moe`, `medfuse`) and MoE ablations (`moe_no_masking`, "
        "`moe_no_dropout`, `moe_single_expert`, `moe_no_ensemble`, `moe_no_linear`), all on the "
        "same splits.",
        "",
    ]
    text = "\n".join(head + sections)
    path = out / "report.md"
    write_text_atomic(text, path)
    summary = {t: r.headline.replace({np.nan: None}).to_dict(orient="records")
               for t, r in results.items()}
    write_json_atomic(summary, out / "summary.json", sort_keys=False, default=float)
    return Report(path, text, results, figures)


__all__ = ["Report", "TaskResult", "build_report", "evaluate_task", "headline_markdown",
           "read_predictions"]
