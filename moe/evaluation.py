"""Evaluation tables for the report and the quality benchmark (numpy/pandas, no Dagster).

Every metric comes from `moe.metrics`; this module only arranges them:

- `headline_table`: per model, test AUROC/AUPRC with bootstrap 95% intervals, F1 at the
  threshold chosen on val (max F1), Brier score and ECE.
- `paired_comparison`: paired bootstrap of the MoE against one other model on the same
  test stays (difference, 95% interval, p-value, verdict).
- `pattern_table`: the same metrics per availability pattern ('E+N+C', 'E', ...).
- `robustness_curve`: AUROC as a modality is hidden for 0%..100% of the test stays that
  have it (nested random subsets, so the curve moves only by what is hidden).
- `subgroup_table`: test AUROC by sex and by age band.
- `gate_by_pattern`: mean gate weight per expert for each availability pattern.
- `oracle_row`: AUROC of known truth probabilities on the same test stays (demo data).

Prediction frames are shaped like `moe.api.predictions`: `stay_id, split, y_true, y_prob`
(plus `pattern` when known; `attach_patterns` adds it from the dataset table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from moe.data import MODALITIES, Drop, Table, extract, pattern_labels, to_arrow
from moe.metrics import (
    auprc,
    auroc,
    bootstrap_ci,
    brier,
    ece,
    f1_at,
    paired_bootstrap,
    threshold_from_val,
)

FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 45, "<45"),
    (45, 65, "45-64"),
    (65, 80, "65-79"),
    (80, 200, "80+"),
)
ABLATION_PREFIX = "moe_"


class Predictor(Protocol):
    def predict_proba(self, table: Table, drop: Drop = None) -> np.ndarray: ...


def is_baseline(name: str) -> bool:
    """Baselines are the non-MoE models (ablations are named `moe_*`, the MoE `moe`)."""
    return name != "moe" and not name.startswith(ABLATION_PREFIX) and name != "oracle"


def test_rows(table: Table, task: str) -> pd.DataFrame:
    """The labelled test stays of `table` as a pandas frame (all columns)."""
    df = to_arrow(table).to_pandas()
    lab = pd.to_numeric(df[task], errors="coerce")
    return df[(df["split"] == "test") & lab.notna()].reset_index(drop=True)


def attach_patterns(pred: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Add the availability `pattern` of each stay (from the dataset's flags and vectors)."""
    if "pattern" in pred.columns:
        return pred
    a = extract(table)
    pat = pd.Series(pattern_labels(a.mask), index=pd.Index(a.stay_id, name="stay_id"))
    pat = pat[~pat.index.duplicated()]
    out = pred.copy()
    out["pattern"] = pat.reindex(out["stay_id"].to_numpy()).fillna("unknown").to_numpy()
    return out


def _test(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[pred["split"] == "test"]


def val_threshold(pred: pd.DataFrame) -> float:
    val = pred[pred["split"] == "val"]
    return threshold_from_val(val["y_true"], val["y_prob"]) if len(val) else 0.5


def model_row(pred: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Test metrics of one prediction frame (intervals from `n_boot` resamples)."""
    t = _test(pred)
    y, p = t["y_true"].to_numpy(float), t["y_prob"].to_numpy(float)
    thr = val_threshold(pred)
    row: dict[str, Any] = {"n": int(len(t)), "n_pos": int((y == 1).sum())}
    for name, fn in (("auroc", auroc), ("auprc", auprc)):
        est, lo, hi = bootstrap_ci(y, p, fn, n=n_boot, seed=seed)
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = est, lo, hi
    row["f1"] = f1_at(y, p, thr)
    row["threshold"] = thr
    row["brier"] = brier(y, p)
    row["ece"] = ece(y, p)
    return row


def headline_table(
    preds: Mapping[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per model (in the given order), columns of `model_row`."""
    rows = [{"model": name, **model_row(p, n_boot, seed)} for name, p in preds.items()]
    return pd.DataFrame(rows)


def aligned_test(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Test stays present in both frames: `stay_id, y_true, p_a, p_b` (+ `pattern` of a)."""
    ta = _test(a).set_index("stay_id")
    tb = _test(b).set_index("stay_id")
    keep = ta.index.intersection(tb.index)
    out = pd.DataFrame(
        {
            "y_true": ta.loc[keep, "y_true"].to_numpy(float),
            "p_a": ta.loc[keep, "y_prob"].to_numpy(float),
            "p_b": tb.loc[keep, "y_prob"].to_numpy(float),
        },
        index=keep,
    )
    if "pattern" in ta.columns:
        out["pattern"] = ta.loc[keep, "pattern"].to_numpy()
    return out.reset_index()


def paired_comparison(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: str = "auroc",
    n_boot: int = 1000,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Paired bootstrap of metric(a) - metric(b) on their shared test stays (`rows`: an
    optional boolean filter on those aligned stays). Verdict 'no difference' when the 95%
    interval holds 0, else 'a better' / 'b better'."""
    al = aligned_test(a, b)
    if rows is not None:
        al = al[np.asarray(rows, bool)]
    fn = {"auroc": auroc, "auprc": auprc}[metric]
    d, lo, hi, pval = paired_bootstrap(al["y_true"], al["p_a"], al["p_b"], fn, n=n_boot, seed=seed)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 <= hi:
        verdict = "no difference"
    else:
        verdict = "a better" if lo > 0 else "b better"
    return {"n": int(len(al)), "diff": d, "lo": lo, "hi": hi, "p": pval, "verdict": verdict}


def best_baseline(headline: pd.DataFrame) -> str | None:
    """The baseline (not the MoE, an ablation or the oracle) with the highest test AUROC."""
    cand = headline[headline["model"].map(is_baseline) & headline["auroc"].notna()]
    if cand.empty:
        return None
    return str(cand.sort_values("auroc", ascending=False)["model"].iloc[0])


def pattern_table(preds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Test AUROC/AUPRC/Brier per (model, availability pattern); frames need `pattern`."""
    rows = []
    for name, pred in preds.items():
        for pat, g in _test(pred).groupby("pattern", sort=True):
            y, p = g["y_true"].to_numpy(float), g["y_prob"].to_numpy(float)
            rows.append(
                {
                    "model": name,
                    "pattern": str(pat),
                    "n": int(len(g)),
                    "prevalence": float(y.mean()),
                    "auroc": auroc(y, p),
                    "auprc": auprc(y, p),
                    "brier": brier(y, p),
                }
            )
    return pd.DataFrame(rows, columns=["model", "pattern", "n", "prevalence", "auroc", "auprc",
                                       "brier"])


def robustness_curve(
    model: Predictor,
    table: Table,
    task: str,
    modality: str,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
) -> pd.DataFrame:
    """AUROC on the labelled test stays when `modality` is hidden for a fraction of the test
    stays that have it. The hidden sets are nested (the first k of one random order), so
    0% is the plain test AUROC and 100% is the AUROC with the modality hidden for all.
    Columns: `fraction, n_hidden, n_with, n, auroc`."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}")
    test = test_rows(table, task)
    a = extract(test, task)
    assert a.y is not None
    has = a.mask[:, MODALITIES.index(modality)]
    idx = np.flatnonzero(has)
    order = np.random.default_rng(seed).permutation(idx)
    rows = []
    for f in fractions:
        k = int(round(float(f) * len(order)))
        hide = np.zeros(len(test), bool)
        hide[order[:k]] = True
        p = model.predict_proba(test, drop={modality: hide})
        rows.append({"fraction": float(f), "n_hidden": k, "n_with": int(len(idx)),
                     "n": int(len(test)), "auroc": auroc(a.y, p)})
    return pd.DataFrame(rows)


def curve_drop(curve: pd.DataFrame) -> float:
    """AUROC lost from 0% to 100% hidden (bigger means less robust)."""
    c = curve.sort_values("fraction")
    return float(c["auroc"].iloc[0] - c["auroc"].iloc[-1])


def age_band(age: pd.Series) -> pd.Series:
    a = pd.to_numeric(age, errors="coerce")
    out = pd.Series("unknown", index=age.index, dtype=object)
    for lo, hi, label in AGE_BANDS:
        out[(a >= lo) & (a < hi)] = label
    return out


def subgroup_table(preds: Mapping[str, pd.DataFrame], table: Table) -> pd.DataFrame:
    """Test AUROC by sex and by age band, per model. Columns `model, group, subgroup, n,
    n_pos, auroc`; within one (model, group) the counts add up to that model's test stays."""
    df = to_arrow(table).to_pandas()
    cols = [c for c in ("stay_id", "gender", "age") if c in df.columns]
    info = df[cols].drop_duplicates("stay_id").set_index("stay_id")
    sex = (info["gender"].astype(object).where(info["gender"].notna(), "unknown")
           if "gender" in info else pd.Series("unknown", index=info.index))
    band = age_band(info["age"]) if "age" in info else pd.Series("unknown", index=info.index)
    rows = []
    for name, pred in preds.items():
        t = _test(pred)
        groups = {
            "sex": sex.reindex(t["stay_id"].to_numpy()).fillna("unknown").astype(str).to_numpy(),
            "age": band.reindex(t["stay_id"].to_numpy()).fillna("unknown").astype(str).to_numpy(),
        }
        y, p = t["y_true"].to_numpy(float), t["y_prob"].to_numpy(float)
        order = {label: i for i, (_, _, label) in enumerate(AGE_BANDS)}
        for gname, lab in groups.items():
            for sub in sorted(set(lab), key=lambda v: (order.get(v, len(order)), v)):
                s = lab == sub
                rows.append({"model": name, "group": gname, "subgroup": sub, "n": int(s.sum()),
                             "n_pos": int((y[s] == 1).sum()), "auroc": auroc(y[s], p[s])})
    return pd.DataFrame(rows, columns=["model", "group", "subgroup", "n", "n_pos", "auroc"])


def gate_by_pattern(model: Any, table: Table, task: str | None = None) -> pd.DataFrame:
    """Mean gate weight per expert (columns `model.expert_names`) for each availability
    pattern (index) over the test stays (labelled ones when `task` is given), plus `n`."""
    test = test_rows(table, task) if task else (
        to_arrow(table).to_pandas().query("split == 'test'").reset_index(drop=True))
    w = np.asarray(model.gate_weights(test), float)
    pat = pattern_labels(extract(test).mask)
    out = pd.DataFrame(w, columns=list(model.expert_names))
    out["pattern"] = pat
    g = out.groupby("pattern", sort=True)
    res = g.mean()
    res.insert(0, "n", g.size())
    return res


def oracle_prediction(
    truth: pd.DataFrame, pred: pd.DataFrame, task: str
) -> pd.DataFrame | None:
    """The truth probabilities `p_<task>` as a prediction frame on `pred`'s stays (joined
    on stay_id); None when the truth has no such column."""
    col = f"p_{task}"
    if col not in truth.columns:
        return None
    tr = truth[["stay_id", col]].drop_duplicates("stay_id").set_index("stay_id")[col]
    out = pred.copy()
    out["y_prob"] = tr.reindex(out["stay_id"].to_numpy()).to_numpy(float)
    return out[np.isfinite(out["y_prob"].to_numpy(float))].reset_index(drop=True)


def missing_modality_rows(pred: pd.DataFrame) -> np.ndarray:
    """Boolean per aligned test stay: the stay lacks at least one modality."""
    return np.asarray(pred["pattern"].astype(str) != "E+N+C", bool)


__all__ = [
    "AGE_BANDS", "FRACTIONS", "aligned_test", "attach_patterns", "best_baseline", "curve_drop",
    "gate_by_pattern", "headline_table", "is_baseline", "missing_modality_rows", "model_row",
    "oracle_prediction", "paired_comparison", "pattern_table", "robustness_curve",
    "subgroup_table", "test_rows", "val_threshold",
]
