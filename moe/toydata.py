"""A synthetic `multimodal_dataset` with planted signal and a computable oracle.

Latents per stay: z = (s1, s2, u_ehr, u_notes, u_cxr) ~ N(0, I); `s1, s2` are shared by all
modalities, `u_m` is seen only by modality m. Each modality vector is a noisy linear view
x_m = A_m z + noise (A_m zero outside the shared latents and u_m), padded to its length.
Each task's label is Bernoulli(sigmoid(b + w . z + c * s1 * s2)); the interaction term makes
the problem not purely linear. Modalities go missing at random (`p_has`, with CXR more often
missing among low-acuity stays, so missingness is mildly informative).

`oracle` in the returned truth frame is the Bayes-optimal probability given the modalities a
stay actually has: the Gaussian posterior of z given observed vectors, then E[sigmoid(.)]
by Monte Carlo, so "MoE within 0.03 AUROC of the oracle" is a meaningful target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from moe.data import MODALITIES

TASK_WEIGHTS = {
    # bias, w over (s1, s2, u_ehr, u_notes, u_cxr), interaction c
    "mortality": (-2.6, (1.0, 0.6, 0.9, 0.7, 1.0), 0.6),
    "long_los": (-0.8, (0.5, 1.0, 1.0, 0.4, 0.6), 0.4),
    "readmission": (-2.0, (0.6, 0.4, 0.6, 1.0, 0.3), 0.3),
}
N_LATENT = 5


def _views(dims: dict[str, int], signal: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A_m (d_m, 5): random directions for s1, s2 and u_m, total signal^2 per latent."""
    out = {}
    for j, m in enumerate(MODALITIES):
        A = np.zeros((dims[m], N_LATENT))
        for col in (0, 1, 2 + j):
            A[:, col] = rng.normal(0, signal / np.sqrt(dims[m]), dims[m])
        out[m] = A
    return out


def make_table(
    n: int = 2000,
    seed: int = 0,
    dims: dict[str, int] | None = None,
    p_has: dict[str, float] | None = None,
    signal: float = 1.2,
    split_frac: tuple[float, float] = (0.6, 0.2),
    oracle_samples: int = 256,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table shaped like `multimodal_dataset`, truth with `stay_id, p_<task>, oracle_<task>`)."""
    dims = dims or {"ehr": 24, "notes": 48, "cxr": 64}
    p_has = p_has or {"ehr": 0.95, "notes": 0.7, "cxr": 0.45}
    rng = np.random.default_rng(seed)
    A = _views(dims, signal, np.random.default_rng(10_000 + seed))
    z = rng.normal(size=(n, N_LATENT))
    acuity = z[:, 0]
    has = {
        "ehr": rng.random(n) < p_has["ehr"],
        "notes": rng.random(n) < p_has["notes"],
        "cxr": rng.random(n) < np.clip(p_has["cxr"] + 0.15 * np.tanh(acuity), 0, 1),
    }
    x = {m: z @ A[m].T + rng.normal(size=(n, dims[m])) for m in MODALITIES}
    u = rng.random(n)
    split = np.where(
        u < split_frac[0], "train", np.where(u < split_frac[0] + split_frac[1], "val", "test")
    )
    cols: dict[str, object] = {"stay_id": np.arange(1, n + 1) * 10 + 3, "split": split}
    truth: dict[str, np.ndarray] = {"stay_id": np.asarray(cols["stay_id"])}
    labels = {}
    for task, (b, w, c) in TASK_WEIGHTS.items():
        logit = b + z @ np.asarray(w) + c * z[:, 0] * z[:, 1]
        p = 1 / (1 + np.exp(-logit))
        labels[task] = (rng.random(n) < p).astype(float)
        truth[f"p_{task}"] = p
    # readmission is undefined for stays that died
    labels["readmission"][labels["mortality"] == 1] = np.nan
    for task, yv in labels.items():
        cols[task] = pd.Series(yv).astype("Int8").array
    for m in MODALITIES:
        cols[f"has_{m}"] = has[m]
    for m in MODALITIES:
        cols[m] = [x[m][i].astype(np.float32) if has[m][i] else None for i in range(n)]
    cols["age"] = np.clip(rng.normal(65, 15, n), 18, 95).round()
    cols["gender"] = np.where(rng.random(n) < 0.45, "F", "M")
    table = pd.DataFrame(cols)
    for task, p in _oracle(x, has, A, oracle_samples, np.random.default_rng(seed + 1)).items():
        truth[f"oracle_{task}"] = p
    return table, pd.DataFrame(truth)


def _oracle(x, has, A, samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(has["ehr"])
    pattern = sum(has[m].astype(int) << j for j, m in enumerate(MODALITIES))
    mean = np.zeros((n, N_LATENT))
    chol = np.zeros((n, N_LATENT, N_LATENT))
    for pat in np.unique(pattern):
        rows = pattern == pat
        prec = np.eye(N_LATENT)
        lin = np.zeros((rows.sum(), N_LATENT))
        for j, m in enumerate(MODALITIES):
            if (pat >> j) & 1:
                prec = prec + A[m].T @ A[m]
                lin = lin + x[m][rows] @ A[m]
        cov = np.linalg.inv(prec)
        mean[rows] = lin @ cov
        chol[rows] = np.linalg.cholesky(cov)
    eps = rng.normal(size=(samples, N_LATENT))
    zs = mean[:, None, :] + np.einsum("nij,sj->nsi", chol, eps)  # (n, S, 5)
    out = {}
    for task, (b, w, c) in TASK_WEIGHTS.items():
        logit = b + zs @ np.asarray(w) + c * zs[..., 0] * zs[..., 1]
        out[task] = (1 / (1 + np.exp(-logit))).mean(axis=1)
    return out
