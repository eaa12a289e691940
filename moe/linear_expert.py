"""The MoE's linear expert: a ridge-regularised linear logit over the same standardised,
projected inputs the modality encoders see, fitted in closed form on the training stays and
then held fixed. The fitted MoE's logit is (1 - w) * mean neural logit + w * this logit
(`ModelConfig.linear_weight`, `moe.model.MoEEnsemble`); alone, it is the `linear` baseline.

Why: on a few thousand stays with embeddings whose signal sits in a few directions under
noise, a strongly shrunk linear model is hard to beat, while the neural experts, stopped
early after a handful of epochs, fit the linear part only roughly; blending the two lowers
the variance where the signal is mostly linear, and the neural experts carry the
interactions it cannot (bench/VAL_SWEEP.txt, steps 4-5).

The logit is  sum_m present_m * (z_m . w_m) + c[pattern]  with z_m the encoder's input
(standardised with train statistics, PCA-projected when wide) and one intercept per
availability pattern, so a missing modality contributes nothing but its pattern's
intercept. Fitting: ridge regression of the 0/1 label on those features, the penalty
chosen by efficient leave-one-out error (scikit-learn's `RidgeCV`), then one logistic fit of
the label on the ridge score (class-weighted like the training loss) to put the score on
the logit scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moe.data import MODALITIES

ALPHAS = np.logspace(-1, 5, 25)  # ridge penalties tried (leave-one-out error picks one)
N_PATTERNS = 2 ** len(MODALITIES)


def pattern_bits(mask: np.ndarray) -> np.ndarray:
    """(n, 3) bool -> (n,) pattern index, bit j set when modality j is present."""
    return (mask.astype(np.int64) * (2 ** np.arange(mask.shape[1]))).sum(axis=1)


def design(z: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """The linear expert's features: each modality's inputs (0 where absent), then one
    indicator per availability pattern."""
    cols = [np.where(mask[:, [j]], np.nan_to_num(z[m]), 0.0) for j, m in enumerate(MODALITIES)]
    cols.append(np.eye(N_PATTERNS)[pattern_bits(mask)])
    return np.concatenate(cols, axis=1)


def fit_linear_expert(
    z: dict[str, np.ndarray], mask: np.ndarray, y: np.ndarray, pos_weight: float = 1.0
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Weights per modality, intercepts per pattern (on the logit scale of a loss with
    `pos_weight` on the positives) and the chosen ridge penalty."""
    from sklearn.linear_model import LogisticRegression

    X = design(z, mask)
    y = np.asarray(y, dtype=np.float64)
    ridge = _ridge(X, y)
    score = X @ ridge.coef_ + ridge.intercept_
    weight = np.where(y == 1, pos_weight, 1.0)
    if score.std() > 0 and 0 < y.mean() < 1:
        lr = LogisticRegression(C=1e12, max_iter=1000).fit(score[:, None], y, sample_weight=weight)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    else:
        a, b = 0.0, 0.0
    coef = a * ridge.coef_
    out: dict[str, np.ndarray] = {}
    pos = 0
    for m in MODALITIES:
        d = z[m].shape[1]
        out[m] = coef[pos : pos + d]
        pos += d
    return out, coef[pos:] + a * float(ridge.intercept_) + b, float(ridge.alpha_)


def _ridge(X: np.ndarray, y: np.ndarray) -> Any:
    """scikit-learn's RidgeCV over `ALPHAS`, fitted (leave-one-out picks the penalty)."""
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=ALPHAS).fit(X, y)


def loo_error(z: dict[str, np.ndarray], mask: np.ndarray, y: np.ndarray) -> float:
    """Mean squared leave-one-out error of the linear expert's ridge fit (at the penalty
    leave-one-out picks) of the 0/1 label on these inputs: a score of the inputs that uses
    every training stay once as a held-out stay, in closed form (`moe.train.resolve_proj_dim`
    compares input widths with it)."""
    return float(-_ridge(design(z, mask), np.asarray(y, dtype=np.float64)).best_score_)
