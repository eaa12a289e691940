"""Classification metrics (scikit-learn's) and fast bootstrap intervals.

Definitions (y in {0, 1}, p the predicted probability of 1):
- `auroc`, `auprc`, `brier`, `f1_at`: scikit-learn's `roc_auc_score`,
  `average_precision_score` (no interpolation), `brier_score_loss`, and `f1_score` of the
  rule p >= t; NaN where undefined (AUROC with one class, AUPRC without positives, no rows).
- `ece`: expected calibration error with 10 equal-width bins on [0, 1]:
  sum_b (n_b / n) |mean(p in b) - mean(y in b)|.
- `threshold_from_val`: the predicted value t whose rule p >= t maximises F1.
- `bootstrap_ci`: percentile 95% interval over `n` resamples of rows (resamples with one
  class only are skipped for rank metrics).
- `paired_bootstrap`: the same resamples for two predictors on the same rows; returns the
  point difference a - b, its 95% interval and a two-sided p-value
  2 min(P(d <= 0), P(d >= 0)) over resamples.
The bootstrap is this module's own: AUROC and AUPRC of many resamples are computed at once
from row multiplicities (`_auroc_weighted`, `_auprc_weighted`; equal to scikit-learn's
value on each resample's rows, which the tests check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import metrics as skm

Metric = Callable[[np.ndarray, np.ndarray], float]


def _yp(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, float).ravel()
    p = np.asarray(p, float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.shape} vs {p.shape}")
    return y, p


def auroc(y, p) -> float:
    y, p = _yp(y, p)
    n_pos = int((y == 1).sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    return float(skm.roc_auc_score(y, p))


def auprc(y, p) -> float:
    y, p = _yp(y, p)
    if not (y == 1).any():
        return float("nan")
    return float(skm.average_precision_score(y, p))


def brier(y, p) -> float:
    y, p = _yp(y, p)
    return float(skm.brier_score_loss(y, p, pos_label=1)) if len(y) else float("nan")


def ece(y, p, bins: int = 10) -> float:
    y, p = _yp(y, p)
    if not len(y):
        return float("nan")
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(total)


def f1_at(y, p, threshold: float) -> float:
    y, p = _yp(y, p)
    return float(skm.f1_score(y == 1, p >= threshold, zero_division=0.0))


def threshold_from_val(y, p) -> float:
    """The threshold (one of the predicted values) that maximises F1 on these rows."""
    y, p = _yp(y, p)
    if not len(y) or (y == 1).sum() == 0:
        return 0.5
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[ps[1:] != ps[:-1], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    fn = ys.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    return float(ps[last][int(np.argmax(f1))])


METRICS: dict[str, Metric] = {"auroc": auroc, "auprc": auprc, "brier": brier, "ece": ece}


def _resample_counts(n_rows: int, n_boot: int, rng: np.random.Generator, chunk: int) -> Any:
    """Yield (b, n_rows) matrices: how often each row is drawn in each of `n_boot` resamples
    (rows drawn with replacement), `chunk` resamples at a time to bound memory."""
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n_rows, (b, n_rows))
        flat = idx + (np.arange(b) * n_rows)[:, None]
        yield np.bincount(flat.ravel(), minlength=b * n_rows).reshape(b, n_rows).astype(float)
        done += b


def _tie_groups(p: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """(row order sorted by p, start index of each run of equal p in that order)."""
    order = np.argsort(-p if descending else p, kind="mergesort")
    s = p[order]
    return order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def _auroc_weighted(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of each weight row of `w` (row multiplicities), ties counted 1/2: the same value
    as `auroc` on the rows repeated by their weights."""
    order, starts = _tie_groups(p, descending=False)
    ws = w[:, order]
    pos = y[order] == 1
    gp = np.add.reduceat(ws * pos, starts, axis=1)
    gn = np.add.reduceat(ws * ~pos, starts, axis=1)
    below = np.cumsum(gn, axis=1) - gn
    n_pos, n_neg = gp.sum(axis=1), gn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (gp * (below + 0.5 * gn)).sum(axis=1) / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def _auprc_weighted(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision of each weight row of `w`, as `auprc` on the repeated rows."""
    order, starts = _tie_groups(p, descending=True)
    ws = w[:, order]
    pos = y[order] == 1
    tp = np.cumsum(np.add.reduceat(ws * pos, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(ws * ~pos, starts, axis=1), axis=1)
    n_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        d_recall = np.diff(np.concatenate([np.zeros_like(n_pos), tp], axis=1), axis=1) / n_pos
        out = (d_recall * precision).sum(axis=1)
    out[n_pos[:, 0] == 0] = np.nan
    return out


_WEIGHTED: dict[Any, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    auroc: _auroc_weighted,
    auprc: _auprc_weighted,
}


def _resampled(
    metric: Metric, y: np.ndarray, ps: list[np.ndarray], n: int, seed: int
) -> list[np.ndarray]:
    """`metric` of each predictor in `ps` on the same `n` row resamples (NaN where undefined).
    AUROC and AUPRC are computed for many resamples at once from row multiplicities (about
    50x faster than one resample at a time, same values); other metrics loop."""
    rng = np.random.default_rng(seed)
    fast = _WEIGHTED.get(metric)
    if fast is not None:
        chunk = max(1, min(n, 2_000_000 // max(len(y), 1)))
        parts: list[list[np.ndarray]] = [[] for _ in ps]
        for w in _resample_counts(len(y), n, rng, chunk):
            for k, p in enumerate(ps):
                parts[k].append(fast(y, p, w))
        return [np.concatenate(v) if v else np.zeros(0) for v in parts]
    vals: list[list[float]] = [[] for _ in ps]
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        for k, p in enumerate(ps):
            vals[k].append(metric(y[i], p[i]))
    return [np.asarray(v, float) for v in vals]


def bootstrap_ci(
    y, p, metric: Metric, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile interval over `n` row resamples."""
    y, p = _yp(y, p)
    point = metric(y, p)
    if not len(y) or n <= 0:
        return point, float("nan"), float("nan")
    (vals,) = _resampled(metric, y, [p], n, seed)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return point, float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lo), float(hi)


def paired_bootstrap(
    y, p_a, p_b, metric: Metric, n: int = 1000, seed: int = 0
) -> tuple[float, float, float, float]:
    """(metric(a) - metric(b), ci_low, ci_high, two-sided p-value) on shared resamples."""
    y, p_a = _yp(y, p_a)
    _, p_b = _yp(y, p_b)
    diff = metric(y, p_a) - metric(y, p_b)
    if not len(y) or n <= 0:
        return float(diff), float("nan"), float("nan"), float("nan")
    va, vb = _resampled(metric, y, [p_a, p_b], n, seed)
    arr = va - vb
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return float(diff), float("nan"), float("nan"), float("nan")
    lo, hi = np.percentile(arr, [2.5, 97.5])
    pval = min(1.0, 2 * min(float(np.mean(arr <= 0)), float(np.mean(arr >= 0))))
    return float(diff), float(lo), float(hi), pval


def summary(y, p, n_boot: int = 1000, seed: int = 0, threshold: float | None = None) -> dict:
    """AUROC/AUPRC with 95% bootstrap intervals, Brier, ECE, prevalence, n (and F1 at
    `threshold` when given)."""
    y, p = _yp(y, p)
    out: dict = {"n": int(len(y)), "n_pos": int((y == 1).sum())}
    out["prevalence"] = float(y.mean()) if len(y) else float("nan")
    for name in ("auroc", "auprc"):
        est, lo, hi = bootstrap_ci(y, p, METRICS[name], n=n_boot, seed=seed)
        out[name], out[f"{name}_ci"] = est, [lo, hi]
    out["brier"] = brier(y, p)
    out["ece"] = ece(y, p)
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["f1"] = f1_at(y, p, threshold)
    return out
