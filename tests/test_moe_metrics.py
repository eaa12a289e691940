"""moe.metrics: agreement with scikit-learn and bootstrap behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score

from moe import metrics as M


def _data(n=400, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    if ties:
        p = np.round(p, 1)  # many ties
    return y, p


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed, ties):
    y, p = _data(seed=seed, ties=ties)
    assert M.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert M.auprc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    t = 0.4
    assert M.f1_at(y, p, t) == pytest.approx(f1_score(y, p >= t), abs=1e-12)


def test_ece_of_hand_computed_bins():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])  # bin 0: |0.05-0.5|, bin 9: |0.95-1|
    assert M.ece(y, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_single_class_rank_metrics_are_nan():
    assert np.isnan(M.auroc([1, 1], [0.2, 0.3]))
    assert np.isnan(M.auprc([0, 0], [0.2, 0.3]))
    assert np.isnan(M.auroc([0, 0], [0.2, 0.3])) and M.auprc([1, 1], [0.2, 0.3]) == 1.0
    assert np.isnan(M.brier([], [])) and M.brier([0, 0], [0.2, 0.4]) == pytest.approx(0.1)


def test_f1_without_predicted_or_true_positives_is_zero():
    assert M.f1_at([0, 0], [0.1, 0.2], 0.5) == 0.0
    assert M.f1_at([0, 1], [0.1, 0.2], 0.5) == 0.0
    assert M.f1_at([0, 1], [0.1, 0.6], 0.5) == 1.0


def test_threshold_from_val_maximises_f1():
    y, p = _data(seed=3)
    t = M.threshold_from_val(y, p)
    best = max(f1_score(y, p >= c) for c in np.unique(p))
    assert f1_score(y, p >= t) == pytest.approx(best)


def test_bootstrap_interval_covers_known_auroc():
    # binormal scores: AUROC = Phi(d / sqrt(2)); d = 1 -> 0.76025
    true_auc, covered, reps = 0.7602499389, 0, 30
    for r in range(reps):
        rng = np.random.default_rng(100 + r)
        y = (rng.random(300) < 0.4).astype(int)
        s = rng.normal(size=300) + 1.0 * y
        est, lo, hi = M.bootstrap_ci(y, s, M.auroc, n=200, seed=r)
        assert lo <= est <= hi
        covered += lo <= true_auc <= hi
    assert covered / reps >= 0.8


def test_paired_bootstrap():
    y, p = _data(seed=4, ties=False)
    diff, lo, hi, pv = M.paired_bootstrap(y, p, p, M.auroc, n=100)
    assert (diff, lo, hi) == (0.0, 0.0, 0.0) and pv == 1.0
    noise = np.random.default_rng(0).normal(size=len(p))
    diff, lo, hi, pv = M.paired_bootstrap(y, p, noise, M.auroc, n=200)
    assert diff > 0 and lo > 0 and pv < 0.01


@pytest.mark.parametrize("ties", [False, True])
def test_batched_resample_metrics_equal_the_metric_on_repeated_rows(ties):
    """The bootstrap computes AUROC/AUPRC of many resamples at once from row multiplicities;
    each value must be exactly the metric of that resample's rows (ties, unused rows)."""
    y, p = _data(n=120, seed=5, ties=ties)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(y), (40, len(y)))
    w = np.stack([np.bincount(i, minlength=len(y)) for i in idx]).astype(float)
    got_roc = M._auroc_weighted(y, p, w)
    got_pr = M._auprc_weighted(y, p, w)
    for k, i in enumerate(idx):
        assert got_roc[k] == pytest.approx(M.auroc(y[i], p[i]), abs=1e-12)
        assert got_pr[k] == pytest.approx(M.auprc(y[i], p[i]), abs=1e-12)
        assert got_roc[k] == pytest.approx(roc_auc_score(y[i], p[i]), abs=1e-12)
        assert got_pr[k] == pytest.approx(average_precision_score(y[i], p[i]), abs=1e-12)


def test_batched_resample_metrics_are_nan_without_both_classes():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4])
    w = np.array([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    roc, pr = M._auroc_weighted(y, p, w), M._auprc_weighted(y, p, w)
    assert np.isnan(roc[0]) and np.isnan(roc[1]) and roc[2] == 1.0
    assert np.isnan(pr[0]) and pr[1] == 1.0 and pr[2] == 1.0


def test_bootstrap_of_a_plain_metric_still_works():
    y, p = _data(seed=6)
    est, lo, hi = M.bootstrap_ci(y, p, M.brier, n=50)
    assert lo <= est <= hi and est == pytest.approx(M.brier(y, p))
