"""Latent state, label model and the ground-truth probabilities.

Per admission the latent vector is ``z = (s_a, s_b, u_ehr, u_note, u_cxr)``, all N(0, 1)
and independent: ``s_a`` (acuity) and ``s_b`` (respiratory/inflammatory) are shared by
every modality; ``u_ehr`` is seen only in vitals/labs, ``u_note`` (chronic disease burden,
a per-subject constant) only in note text and ``u_cxr`` (focal lesion burden) only in the
X-ray. Each label is Bernoulli(sigmoid(b_k + w_{k,g} . z + a_k * age_std)) with weights
that differ between the medical and surgical subgroup ``g``.

The truth for a stay is P(label | the parts of z that its available modalities show, g,
age), the unique factor of a missing modality integrated out with Gauss-Hermite
quadrature (exact to numerical precision). Availability depends only on observed
quantities (s_a, g), so the missing factors keep their N(0, 1) prior.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]
LATENTS = ("shared_a", "shared_b", "ehr", "note", "cxr")
# The outcomes simulated, with a known truth: the default tasks of plumbing/tasks.py (a
# test keeps the two equal; synthetic/ imports nothing of the project but plumbing.atomic).
TASKS = ("mortality", "long_los", "readmission")

# weights[task][subgroup] over LATENTS; subgroup 0 = medical, 1 = surgical
WEIGHTS: dict[str, F] = {
    "mortality": np.array([[1.0, 0.5, 0.6, 0.5, 0.9], [1.0, 0.3, 1.0, 0.4, 0.3]]),
    "long_los": np.array([[0.6, 0.8, 0.5, 0.3, 0.7], [0.7, 0.4, 0.9, 0.2, 0.4]]),
    "readmission": np.array([[0.4, 0.2, 0.5, 1.0, 0.4], [0.3, 0.2, 0.6, 0.7, 0.2]]),
}
INTERCEPT: dict[str, F] = {
    "mortality": np.array([-3.05, -3.4]),
    "long_los": np.array([-1.85, -2.0]),
    "readmission": np.array([-2.05, -2.25]),
}
AGE_W = {"mortality": 0.45, "long_los": 0.1, "readmission": 0.15}

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(24)
_GH_W = _GH_W / _GH_W.sum()


def sigmoid(x: F) -> F:
    return 1.0 / (1.0 + np.exp(-x))


def linear(task: str, z: F, group: npt.NDArray[np.int64], age_std: F) -> F:
    """Linear predictor, z: (n, 5)."""
    w = WEIGHTS[task][group]
    return INTERCEPT[task][group] + (w * z).sum(1) + AGE_W[task] * age_std


def truth_probabilities(
    z: F, group: npt.NDArray[np.int64], age_std: F, observed: npt.NDArray[np.bool_]
) -> dict[str, F]:
    """P(label | observed latents). ``observed``: (n, 5) bool mask over LATENTS."""
    zo = np.where(observed, z, 0.0)
    out: dict[str, F] = {}
    lin = {t: linear(t, zo, group, age_std) for t in TASKS}
    sd = {t: np.sqrt(((WEIGHTS[t][group] ** 2) * ~observed).sum(1)) for t in TASKS}
    # 1-D for mortality and long_los
    for t in ("mortality", "long_los"):
        pts = lin[t][:, None] + sd[t][:, None] * _GH_X[None, :]
        out[f"p_{t}"] = sigmoid(pts) @ _GH_W
    # readmission given survival: 2-D Gaussian of (L_m, L_r) over the missing factors
    wm, wr = WEIGHTS["mortality"][group], WEIGHTS["readmission"][group]
    miss = ~observed
    vm = ((wm**2) * miss).sum(1)
    vr = ((wr**2) * miss).sum(1)
    cmr = (wm * wr * miss).sum(1)
    l11 = np.sqrt(vm)
    l21 = np.where(l11 > 0, cmr / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(vr - l21**2, 0.0))
    e1 = _GH_X[None, :, None]
    e2 = _GH_X[None, None, :]
    lm = lin["mortality"][:, None, None] + l11[:, None, None] * e1
    lr = lin["readmission"][:, None, None] + l21[:, None, None] * e1 + l22[:, None, None] * e2
    ww = _GH_W[:, None] * _GH_W[None, :]
    surv = 1.0 - sigmoid(lm)
    num = (sigmoid(lr) * surv * ww).sum((1, 2))
    den = (np.broadcast_to(surv, lr.shape) * ww).sum((1, 2))
    out["p_readmission"] = num / den
    return out
