"""Dataset families for `bench.suite`: `multimodal_dataset`-shaped tables with a known oracle.

Every family is one latent-Gaussian generative process; the families differ in how the label
depends on the latents and in how modalities go missing. Per stay:

- latents z ~ N(0, I): `acuity` and `s2` (seen by several modalities), `u_ehr`, `u_notes`,
  `u_cxr` (each seen by one modality only), `tau` (a patient-type latent, used by
  `patient_types`), and `NUISANCE` latents per modality that load on that modality only and
  carry no label information (embeddings have strong directions unrelated to the outcome);
- each modality vector x_m = A_m z + N(0, I) noise, widths like the real ones (EHR 100,
  notes 384, CXR 1024): the signal lives in a few random directions under isotropic noise;
- `mortality` ~ Bernoulli(sigmoid(logit(z))) with a family-specific `logit`;
- availability: EHR almost always, notes ~75%, CXR ~35% (MIMIC-like), independent of z
  except in `informative_missingness`; `availability_shift` uses other rates at test.

The oracle is P(mortality = 1 | the vectors and the availability pattern a stay has). Given
the observed vectors, z is Gaussian (linear-Gaussian views): posterior precision
I + sum_m A_m' A_m over the observed modalities. When availability depends on z the pattern
is evidence too: P(z | x, pattern) is proportional to N(z; posterior) P(pattern | z), so the
Monte Carlo oracle draws S samples from the Gaussian posterior and weights each by
P(pattern | z_s) (self-normalised importance sampling); then p = sum_s w_s sigmoid(logit(z_s)).
For a linear logit with availability independent of z, `exact_oracle` gives the same quantity
by Gauss-Hermite quadrature of the 1-d Gaussian w'z (tests check that both agree).

Families (all >= 12,000 rows; seeds 0, 1, 2 in the suite):

- `homogeneous`: one linear logit for every stay.
- `patient_types`: three patient types (tau cut in thirds); the outcome of type t depends on
  a different modality's private latent (EHR, notes, CXR); the type is only partly visible
  (tau loads on EHR with moderate strength, on notes weakly).
- `interactions`: products of latents seen by different modalities (EHR x CXR, notes x EHR).
- `informative_missingness`: notes and CXR are more often present for high-acuity stays,
  so the availability pattern itself predicts the outcome.
- `availability_shift`: train/val have notes 85%, CXR 30%; test has notes 40%, CXR 80% (a
  model moved to a hospital with other data). `Draw.id_test` is a second test set drawn with
  the training availability, for the in-distribution AUROC the shift drop is measured against.
- `small_data`: the homogeneous process plus an interaction, 2,000 training stays (1,000 val,
  9,000 test).

These families are frozen: they were committed before any model change and must not be
tuned to suit a model (see issue 13).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd

from moe.data import MODALITIES

TASK = "mortality"
DIMS = {"ehr": 100, "notes": 384, "cxr": 1024}
NUISANCE = 6  # label-free latent directions per modality
NUISANCE_STRENGTH = 2.0
CORE = ("acuity", "s2", "u_ehr", "u_notes", "u_cxr", "tau")
N_CORE = len(CORE)
N_LATENT = N_CORE + NUISANCE * len(MODALITIES)
IDX = {name: i for i, name in enumerate(CORE)}
PREVALENCE = 0.15

# loading strength (norm of the direction in x_m) of each core latent per modality
BASE_VIEWS: dict[str, dict[str, float]] = {
    "ehr": {"acuity": 1.5, "s2": 1.0, "u_ehr": 2.0},
    "notes": {"acuity": 1.2, "s2": 1.3, "u_notes": 2.0},
    "cxr": {"acuity": 1.0, "u_cxr": 2.0},
}
MIMIC_AVAIL = {"ehr": 0.97, "notes": 0.75, "cxr": 0.35}

Logit = Callable[[np.ndarray], np.ndarray]  # (..., N_CORE) -> (...)


def _z(name: str) -> Callable[[np.ndarray], np.ndarray]:
    i = IDX[name]
    return lambda z: z[..., i]


def _linear(w: dict[str, float]) -> Logit:
    vec = np.zeros(N_CORE)
    for k, v in w.items():
        vec[IDX[k]] = v
    return lambda z: z @ vec


HOMOGENEOUS_W = {"acuity": 1.0, "s2": 0.6, "u_ehr": 0.8, "u_notes": 0.7, "u_cxr": 0.9}
SHIFT_W = {"acuity": 0.8, "s2": 0.5, "u_ehr": 0.6, "u_notes": 0.9, "u_cxr": 1.1}
TYPE_CUTS = (-0.4307, 0.4307)  # N(0,1) terciles


def _types_logit(z: np.ndarray) -> np.ndarray:
    tau = z[..., IDX["tau"]]
    t = np.digitize(tau, TYPE_CUTS)  # 0, 1, 2
    private = np.stack([z[..., IDX["u_ehr"]], z[..., IDX["u_notes"]], z[..., IDX["u_cxr"]]], -1)
    driver = np.take_along_axis(private, t[..., None], axis=-1)[..., 0]
    return 0.9 * z[..., IDX["acuity"]] + 2.0 * driver + 0.3 * (t - 1)


def _interactions_logit(z: np.ndarray) -> np.ndarray:
    a, s2, ue, un, uc = (z[..., IDX[k]] for k in ("acuity", "s2", "u_ehr", "u_notes", "u_cxr"))
    return 0.9 * a + 0.5 * s2 + 0.4 * uc + 1.3 * ue * uc + 1.0 * un * ue


def _small_logit(z: np.ndarray) -> np.ndarray:
    return _linear(HOMOGENEOUS_W)(z) + 0.5 * z[..., IDX["acuity"]] * z[..., IDX["s2"]]


Avail = Callable[[np.ndarray, bool], np.ndarray]  # (z (..., N_CORE), test?) -> (..., 3) P(has)


def _mcar(rates: dict[str, float], test_rates: dict[str, float] | None = None) -> Avail:
    def f(z: np.ndarray, test: bool) -> np.ndarray:
        r = test_rates if (test and test_rates) else rates
        return np.broadcast_to(np.array([r[m] for m in MODALITIES]), (*z.shape[:-1], 3))

    return f


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit_of(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _acuity_avail(z: np.ndarray, test: bool) -> np.ndarray:
    a = z[..., IDX["acuity"]]
    ehr = np.full(a.shape, MIMIC_AVAIL["ehr"])
    notes = _sigmoid(_logit_of(0.78) + 1.2 * a)
    cxr = _sigmoid(_logit_of(0.30) + 1.5 * a)
    return np.stack([ehr, notes, cxr], axis=-1)


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    logit: Logit
    avail: Avail
    linear: dict[str, float] | None = None  # the logit's weights when it is linear
    informative: bool = False  # availability depends on z
    views: dict[str, dict[str, float]] = field(default_factory=lambda: BASE_VIEWS)
    n_train: int = 7200
    n_val: int = 1800
    n_test: int = 3000
    id_test: bool = False  # also draw a test set with the training availability

    @property
    def n(self) -> int:
        return self.n_train + self.n_val + self.n_test


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("homogeneous", "one linear logit for every stay",
               _linear(HOMOGENEOUS_W), _mcar(MIMIC_AVAIL), linear=HOMOGENEOUS_W),
        Family("patient_types",
               "three types, each driven by another modality; type partly visible in EHR",
               _types_logit, _mcar(MIMIC_AVAIL),
               views={"ehr": {**BASE_VIEWS["ehr"], "tau": 1.3},
                      "notes": {**BASE_VIEWS["notes"], "tau": 0.7},
                      "cxr": BASE_VIEWS["cxr"]}),
        Family("interactions", "products of latents seen by different modalities",
               _interactions_logit, _mcar(MIMIC_AVAIL)),
        Family("informative_missingness", "notes and CXR more often present when acuity is high",
               _linear(HOMOGENEOUS_W), _acuity_avail, linear=HOMOGENEOUS_W, informative=True),
        Family("availability_shift", "train notes 85% CXR 30%; test notes 40% CXR 80%",
               _linear(SHIFT_W),
               _mcar({"ehr": 0.97, "notes": 0.85, "cxr": 0.30},
                     {"ehr": 0.97, "notes": 0.40, "cxr": 0.80}),
               linear=SHIFT_W, id_test=True),
        Family("small_data", "homogeneous plus an interaction, 2,000 training stays",
               _small_logit, _mcar(MIMIC_AVAIL), n_train=2000, n_val=1000, n_test=9000),
    )
}


@cache
def intercept(name: str) -> float:
    """The logit's intercept giving prevalence `PREVALENCE` (fixed sample, bisection)."""
    fam = FAMILIES[name]
    z = np.random.default_rng(12345).normal(size=(200_000, N_CORE))
    base = fam.logit(z)
    lo, hi = -10.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(base + mid).mean() < PREVALENCE:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def loadings(fam: Family, seed: int, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """A_m (d_m, N_LATENT): random directions for each latent modality m sees, with norm equal
    to its strength (`fam.views`; `NUISANCE_STRENGTH` for m's own nuisance latents)."""
    rng = np.random.default_rng([7, seed, sum(map(ord, fam.name))])
    out = {}
    for j, m in enumerate(MODALITIES):
        A = np.zeros((dims[m], N_LATENT))
        cols = {IDX[k]: s for k, s in fam.views[m].items()}
        for c in range(NUISANCE):
            cols[N_CORE + j * NUISANCE + c] = NUISANCE_STRENGTH
        for c, s in cols.items():
            v = rng.normal(size=dims[m])
            A[:, c] = s * v / np.linalg.norm(v)
        out[m] = A
    return out


@dataclass
class Part:
    """Rows of one draw: latents, availability, vectors, labels and the oracle."""

    z: np.ndarray
    has: np.ndarray  # (n, 3) bool
    x: dict[str, np.ndarray]
    y: np.ndarray
    oracle: np.ndarray


@dataclass
class Draw:
    family: Family
    seed: int
    table: pd.DataFrame  # multimodal_dataset-shaped, splits train/val/test
    oracle: np.ndarray  # P(y = 1 | observed) per row of `table`
    truth: np.ndarray  # P(y = 1 | z) per row
    id_test: pd.DataFrame | None = None  # test rows with the training availability
    id_oracle: np.ndarray | None = None
    dims: dict[str, int] = field(default_factory=lambda: dict(DIMS))


def _part(fam: Family, A: dict[str, np.ndarray], n: int, test: bool, b: float,
          rng: np.random.Generator, samples: int) -> Part:
    dims = {m: A[m].shape[0] for m in MODALITIES}
    z = rng.normal(size=(n, N_LATENT))
    has = rng.random((n, 3)) < fam.avail(z[:, :N_CORE], test)
    x = {m: (z @ A[m].T + rng.normal(size=(n, dims[m]))).astype(np.float32) for m in MODALITIES}
    p = _sigmoid(b + fam.logit(z[:, :N_CORE]))
    y = (rng.random(n) < p).astype(np.int8)
    orc = mc_oracle(fam, A, x, has, test, b, samples, np.random.default_rng(rng.integers(2**63)))
    return Part(z, has, x, y, orc)


def _frame(part: Part, split: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    n = len(split)
    cols: dict[str, object] = {"stay_id": ids, "split": split}
    cols[TASK] = pd.array(part.y, dtype="Int8")
    for j, m in enumerate(MODALITIES):
        cols[f"has_{m}"] = part.has[:, j]
    for j, m in enumerate(MODALITIES):
        xm = part.x[m]
        cols[m] = [xm[i] if part.has[i, j] else None for i in range(n)]
    return pd.DataFrame(cols)


def make(name: str, seed: int, scale: float = 1.0, dims: dict[str, int] | None = None,
         samples: int = 512) -> Draw:
    """One draw of family `name`. `scale` < 1 shrinks every split (for `--quick`), `dims`
    overrides the vector widths (tests)."""
    fam = FAMILIES[name]
    dims = dict(dims or DIMS)
    A = loadings(fam, seed, dims)
    b = intercept(name)
    rng = np.random.default_rng([seed, 1 + sum(map(ord, name))])
    n_tr, n_va, n_te = (max(int(round(k * scale)), 50) for k in (fam.n_train, fam.n_val, fam.n_test))
    dev = _part(fam, A, n_tr + n_va, False, b, rng, samples)
    te = _part(fam, A, n_te, True, b, rng, samples)
    split = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * n_te, dtype=object)
    part = Part(
        np.concatenate([dev.z, te.z]), np.concatenate([dev.has, te.has]),
        {m: np.concatenate([dev.x[m], te.x[m]]) for m in MODALITIES},
        np.concatenate([dev.y, te.y]), np.concatenate([dev.oracle, te.oracle]),
    )
    order = rng.permutation(len(split))  # splits interleaved, as in a real table
    part = Part(part.z[order], part.has[order], {m: v[order] for m, v in part.x.items()},
                part.y[order], part.oracle[order])
    split = split[order]
    ids = np.arange(1, len(split) + 1) * 10 + 7
    truth = _sigmoid(b + fam.logit(part.z[:, :N_CORE]))
    draw = Draw(fam, seed, _frame(part, split, ids), part.oracle, truth, dims=dims)
    if fam.id_test:
        idp = _part(fam, A, n_te, False, b, rng, samples)
        draw.id_test = _frame(idp, np.array(["test"] * n_te, dtype=object),
                              np.arange(1, n_te + 1) * 10 + 9 + 10 * len(split))
        draw.id_oracle = idp.oracle
    return draw


def _posterior(A: dict[str, np.ndarray], x: dict[str, np.ndarray], has: np.ndarray):
    """Per row: posterior mean (n, N_CORE) and Cholesky factor (n, N_CORE, N_CORE) of the core
    latents given the observed vectors (all latents marginalised jointly)."""
    n = len(has)
    pattern = (has * (1 << np.arange(3))).sum(axis=1)
    mean = np.zeros((n, N_CORE))
    chol = np.zeros((n, N_CORE, N_CORE))
    for pat in np.unique(pattern):
        rows = pattern == pat
        prec = np.eye(N_LATENT)
        lin = np.zeros((int(rows.sum()), N_LATENT))
        for j, m in enumerate(MODALITIES):
            if (pat >> j) & 1:
                prec = prec + A[m].T @ A[m]
                lin = lin + x[m][rows].astype(np.float64) @ A[m]
        cov = np.linalg.inv(prec)
        mean[rows] = (lin @ cov)[:, :N_CORE]
        chol[rows] = np.linalg.cholesky(cov[:N_CORE, :N_CORE])
    return mean, chol


def mc_oracle(fam: Family, A: dict[str, np.ndarray], x: dict[str, np.ndarray], has: np.ndarray,
              test: bool, b: float, samples: int, rng: np.random.Generator,
              chunk: int = 2048) -> np.ndarray:
    """Monte Carlo P(y = 1 | observed vectors, availability pattern) per row."""
    mean, chol = _posterior(A, x, has)
    out = np.empty(len(has))
    for s in range(0, len(has), chunk):
        sl = slice(s, s + chunk)
        eps = rng.normal(size=(samples, N_CORE))
        zs = mean[sl, None, :] + np.einsum("nij,sj->nsi", chol[sl], eps)  # (c, S, K)
        p = _sigmoid(b + fam.logit(zs))
        if fam.informative:
            q = fam.avail(zs, test)  # (c, S, 3)
            h = has[sl, None, :]
            w = np.prod(np.where(h, q, 1 - q), axis=-1)
            out[sl] = (w * p).sum(1) / np.maximum(w.sum(1), 1e-300)
        else:
            out[sl] = p.mean(axis=1)
    return out


def exact_oracle(draw: Draw, table: pd.DataFrame | None = None, nodes: int = 80) -> np.ndarray:
    """Gauss-Hermite P(y = 1 | observed) for a family with a linear logit and availability
    independent of z: w'z | observed ~ N(w'mu, w' Sigma w)."""
    fam = draw.family
    if fam.linear is None or fam.informative:
        raise ValueError(f"family {fam.name!r} has no exact oracle")
    t = draw.table if table is None else table
    has = t[[f"has_{m}" for m in MODALITIES]].to_numpy(bool)
    x = {m: np.stack([v if v is not None else np.zeros(draw.dims[m], np.float32) for v in t[m]])
         for m in MODALITIES}
    A = loadings(fam, draw.seed, draw.dims)
    mean, chol = _posterior(A, x, has)
    w = np.zeros(N_CORE)
    for k, v in fam.linear.items():
        w[IDX[k]] = v
    mu = intercept(fam.name) + mean @ w
    sd = np.linalg.norm(np.einsum("nij,i->nj", chol, w), axis=1)
    g, gw = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-x^2 / 2)
    gw = gw / gw.sum()
    return (_sigmoid(mu[:, None] + sd[:, None] * g[None, :]) * gw).sum(axis=1)


__all__ = ["DIMS", "FAMILIES", "TASK", "Draw", "Family", "exact_oracle", "make", "mc_oracle"]
