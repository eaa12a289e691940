"""The suite's dataset families: shape contract and the correctness of their oracles."""

from __future__ import annotations

import numpy as np
import pytest

from bench import families as F
from moe.data import MODALITIES, extract
from moe.metrics import auroc

SMALL = {"ehr": 16, "notes": 24, "cxr": 32}


def test_every_family_has_the_multimodal_dataset_shape() -> None:
    for name in F.FAMILIES:
        d = F.make(name, 0, scale=0.05, dims=SMALL, samples=64)
        t = d.table
        assert {"stay_id", "split", F.TASK, *(f"has_{m}" for m in MODALITIES), *MODALITIES} <= set(t)
        assert set(t.split) == {"train", "val", "test"}
        assert t.stay_id.is_unique
        a = extract(t, F.TASK)
        assert a.dims() == SMALL
        for j, m in enumerate(MODALITIES):
            # null exactly where has_<m> is false
            assert (t[m].isna().to_numpy() == ~t[f"has_{m}"].to_numpy()).all(), (name, m)
            assert (a.mask[:, j] == t[f"has_{m}"].to_numpy()).all()
        assert d.oracle.shape == (len(t),)
        assert ((d.oracle > 0) & (d.oracle < 1)).all()


def test_full_size_families_meet_the_issue_sizes() -> None:
    for name, fam in F.FAMILIES.items():
        assert fam.n >= 12_000, name
    assert F.FAMILIES["small_data"].n_train == 2000
    assert F.DIMS == {"ehr": 100, "notes": 384, "cxr": 1024}


def test_availability_rates_and_the_shift() -> None:
    d = F.make("homogeneous", 1, scale=0.5, dims=SMALL, samples=16)
    rates = d.table[[f"has_{m}" for m in MODALITIES]].to_numpy().mean(axis=0)
    assert np.allclose(rates, [0.97, 0.75, 0.35], atol=0.03)
    s = F.make("availability_shift", 1, scale=0.5, dims=SMALL, samples=16)
    has = s.table[["has_notes", "has_cxr"]].to_numpy()
    train = (s.table.split == "train").to_numpy()
    test = (s.table.split == "test").to_numpy()
    assert np.allclose(has[train].mean(axis=0), [0.85, 0.30], atol=0.03)
    assert np.allclose(has[test].mean(axis=0), [0.40, 0.80], atol=0.04)
    assert s.id_test is not None
    assert np.allclose(s.id_test[["has_notes", "has_cxr"]].to_numpy().mean(axis=0),
                       [0.85, 0.30], atol=0.04)
    # informative missingness: CXR is more common among stays that die
    i = F.make("informative_missingness", 1, scale=0.5, dims=SMALL, samples=16)
    y = i.table[F.TASK].to_numpy(int)
    cxr = i.table.has_cxr.to_numpy()
    assert cxr[y == 1].mean() > cxr[y == 0].mean() + 0.15


@pytest.mark.parametrize("name", ["homogeneous", "availability_shift"])
def test_monte_carlo_oracle_agrees_with_the_exact_one(name: str) -> None:
    d = F.make(name, 2, scale=0.1, dims=SMALL, samples=4096)
    exact = F.exact_oracle(d)
    assert np.abs(exact - d.oracle).max() < 0.012
    assert np.abs(exact - d.oracle).mean() < 0.002


def test_exact_oracle_refuses_non_linear_or_informative_families() -> None:
    for name in ("patient_types", "interactions", "informative_missingness", "small_data"):
        d = F.make(name, 0, scale=0.02, dims=SMALL, samples=8)
        with pytest.raises(ValueError, match="no exact oracle"):
            F.exact_oracle(d)


def test_oracle_is_calibrated_within_every_availability_pattern() -> None:
    """P(y | observed) must average to the label rate in each pattern. Under informative
    missingness this holds only because the oracle weights by P(pattern | z): the
    unweighted Gaussian posterior misses by far more than the tolerance."""
    d = F.make("informative_missingness", 3, scale=1.0, dims=SMALL, samples=256)
    y = d.table[F.TASK].to_numpy(float)
    has = d.table[["has_notes", "has_cxr"]].to_numpy()
    fam = F.FAMILIES["informative_missingness"]
    naive_fam = F.Family("naive", "", fam.logit, fam.avail, informative=False, views=fam.views)
    x = {m: np.stack([v if v is not None else np.zeros(SMALL[m], np.float32)
                      for v in d.table[m]]) for m in MODALITIES}
    all_has = d.table[[f"has_{m}" for m in MODALITIES]].to_numpy(bool)
    A = F.loadings(fam, 3, SMALL)
    naive = F.mc_oracle(naive_fam, A, x, all_has, False, F.intercept(fam.name), 256,
                        np.random.default_rng(0))
    for pat in [(0, 0), (1, 0), (1, 1)]:
        rows = (has == pat).all(axis=1)
        se = np.sqrt(y[rows].mean() * (1 - y[rows].mean()) / rows.sum())
        assert abs(d.oracle[rows].mean() - y[rows].mean()) < 3.5 * se + 0.005, pat
    no_cxr_no_notes = (has == (0, 0)).all(axis=1)
    # low-acuity stays lack both: the naive posterior overestimates their risk
    assert naive[no_cxr_no_notes].mean() - y[no_cxr_no_notes].mean() > 0.02


def test_oracle_beats_a_fitted_model_on_a_large_sample() -> None:
    """Logistic regression on the concatenated vectors (zero where missing, plus the
    availability mask), fitted on 15,000 stays, is below the oracle on the test stays."""
    from sklearn.linear_model import LogisticRegression

    for name in ("homogeneous", "interactions"):
        d = F.make(name, 0, scale=1.6, dims=SMALL, samples=256)
        a = extract(d.table, F.TASK)
        X = np.concatenate([a.x[m] for m in MODALITIES] + [a.mask.astype(np.float32)], axis=1)
        tr, te = a.split != "test", a.split == "test"
        assert a.y is not None
        lr = LogisticRegression(max_iter=2000).fit(X[tr], a.y[tr])
        fitted = auroc(a.y[te], lr.predict_proba(X[te])[:, 1])
        oracle = auroc(a.y[te], d.oracle[te])
        assert oracle > fitted, (name, oracle, fitted)
        # and the oracle is informative but below the label's own probability
        assert 0.7 < oracle < auroc(a.y[te], d.truth[te])


def test_draws_are_reproducible_and_seeds_differ() -> None:
    a = F.make("patient_types", 4, scale=0.03, dims=SMALL, samples=32)
    b = F.make("patient_types", 4, scale=0.03, dims=SMALL, samples=32)
    c = F.make("patient_types", 5, scale=0.03, dims=SMALL, samples=32)
    assert np.array_equal(a.oracle, b.oracle)
    assert a.table[F.TASK].equals(b.table[F.TASK])
    assert not np.array_equal(a.truth, c.truth)
