"""moe.linear_expert and the MoE's linear expert: the closed-form fit recovers a planted
linear logit, a missing modality's vector is never read, the MoE's logit is the stated blend
of its neural members and the linear expert (which is the `linear` baseline), and saved
models round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moe
from moe.data import MODALITIES
from moe.linear_expert import design, fit_linear_expert, pattern_bits
from moe.metrics import auroc
from moe.model import LinearExpert, linear_logit
from moe.toydata import make_table
from moe.train import FittedMoE

torch.set_num_threads(1)
DIMS = {"ehr": 6, "notes": 5, "cxr": 4}
FAST = {"max_epochs": 4, "patience": 2, "ensemble": 1, "width": 16, "expert_hidden": 16,
        "threads": 1, "batch_size": 256}


def _planted(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    z = {m: rng.normal(size=(n, d)) for m, d in DIMS.items()}
    mask = rng.random((n, 3)) < [0.95, 0.7, 0.4]
    w = {m: rng.normal(size=d) for m, d in DIMS.items()}
    c = rng.normal(scale=0.5, size=8) - 1.0
    logit = c[pattern_bits(mask)] + sum(np.where(mask[:, j], z[m] @ w[m], 0.0)
                                        for j, m in enumerate(MODALITIES))
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return z, mask, w, logit, y


def test_fit_recovers_a_planted_linear_logit():
    z, mask, w, logit, y = _planted()
    w_hat, pattern, alpha = fit_linear_expert(z, mask, y)
    for m in MODALITIES:  # the direction of each modality's weights
        cos = w_hat[m] @ w[m] / np.linalg.norm(w_hat[m]) / np.linalg.norm(w[m])
        assert cos > 0.95, (m, cos)
    fitted = pattern[pattern_bits(mask)] + sum(np.where(mask[:, j], z[m] @ w_hat[m], 0.0)
                                               for j, m in enumerate(MODALITIES))
    assert np.corrcoef(fitted, logit)[0, 1] > 0.95
    assert auroc(y, fitted) > auroc(y, logit) - 0.01
    # on the logit scale: the mean predicted probability is the prevalence
    assert abs((1 / (1 + np.exp(-fitted))).mean() - y.mean()) < 0.01
    assert 0 < alpha < 1e3  # a weak penalty: the planted signal is strong


def test_fit_ignores_absent_modalities_values():
    z, mask, _, _, y = _planted(2000, seed=1)
    absent = ~mask[:, 2]
    for garbage in (np.nan, 1e3):
        z2 = {m: v.copy() for m, v in z.items()}
        z2["cxr"][absent] = garbage  # NaN as `extract` leaves it, or any value
        assert np.array_equal(design(z2, mask), design(z, mask))
        fit, fit2 = fit_linear_expert(z, mask, y), fit_linear_expert(z2, mask, y)
        assert all(np.array_equal(fit[0][m], fit2[0][m]) for m in MODALITIES)
        assert np.array_equal(fit[1], fit2[1])
    assert (design(z, mask)[absent][:, 11:15] == 0).all()  # CXR columns: 6 + 5 .. + 4


def test_linear_expert_module_computes_the_linear_logit_and_ignores_missing_vectors():
    g = torch.Generator().manual_seed(1)
    lin = LinearExpert(DIMS, proj_dim=0)
    for m in MODALITIES:
        getattr(lin, f"lin_{m}").copy_(torch.randn(DIMS[m], generator=g))
    lin.lin_pattern.copy_(torch.randn(8, generator=g))
    x = {m: torch.randn(40, d, generator=g) for m, d in DIMS.items()}
    mask = torch.rand(40, 3, generator=g) < 0.6
    mask[:, 0] = True
    out = lin(x, mask)["logits"]
    bits = (mask.long() * torch.tensor([1, 2, 4])).sum(1)
    expected = lin.lin_pattern[bits] + sum(
        torch.where(mask[:, j], x[m] @ getattr(lin, f"lin_{m}"), torch.zeros(40))
        for j, m in enumerate(MODALITIES))
    assert torch.allclose(out, expected, atol=1e-6)
    z = {m: lin.encoders[m].inputs(x[m]) for m in MODALITIES}
    assert torch.equal(linear_logit(z, mask, lin), out)
    x2 = dict(x)
    x2["cxr"] = torch.where(mask[:, 2:3], x["cxr"], torch.full_like(x["cxr"], float("nan")))
    assert torch.equal(lin(x2, mask)["logits"], out)


def _logit(p):
    return np.log(p / (1 - p))


@pytest.mark.parametrize("ensemble", [1, 2])
def test_moe_logit_blends_the_neural_mean_with_the_linear_baseline(ensemble):
    table = make_table(1200, seed=2, signal=2.0)[0]
    cfg = {**FAST, "ensemble": ensemble, "linear_weight": 0.3, "calibration": "none",
           "linear_weight_choice": "fixed"}
    fitted = moe.fit(table, "mortality", cfg)
    members = fitted.module.members
    assert len(members) == ensemble
    neural = np.mean([_logit(FittedMoE(m, "mortality", fitted.config).predict_proba(table))
                      for m in members], axis=0)
    lin = moe.fit_baseline(table, "mortality", "linear", cfg)  # the same closed-form fit
    expected = 0.7 * neural + 0.3 * _logit(lin.predict_proba(table))
    assert np.allclose(_logit(fitted.predict_proba(table)), expected, atol=1e-4)
    assert fitted.history["linear"]["ridge_alpha"] > 0
    # the linear weight moves the prediction; 0 leaves the neural experts alone
    plain = moe.fit(table, "mortality", {**cfg, "linear_weight": 0.0})
    assert getattr(plain.module, "linear", None) is None
    assert np.allclose(_logit(plain.predict_proba(table)), neural, atol=1e-4)


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_save_load_roundtrip_with_and_without_linear_expert(tmp_path, weight):
    table = make_table(600, seed=3)[0]
    m = moe.fit(table, "mortality", {**FAST, "linear_weight": weight})
    m.save(tmp_path)
    assert np.array_equal(moe.load(tmp_path).predict_proba(table), m.predict_proba(table))
    assert any(k.startswith("linear.lin_") for k in m.module.state_dict()) is (weight > 0)


def test_bad_linear_weight_is_refused():
    with pytest.raises(ValueError, match="linear_weight"):
        moe.fit(make_table(200, seed=0)[0], "mortality", {**FAST, "linear_weight": 1.5})


def test_linear_weight_is_the_validation_log_loss_minimiser_and_survives_save(tmp_path):
    """The default choice: the weight with the least validation log-loss after Platt scaling,
    recomputed here from the members and the linear expert; test rows play no part."""
    from moe.data import extract
    from moe.train import LINEAR_WEIGHT_GRID, labelled_split, platt_scaling

    table = make_table(1500, seed=4, signal=1.5)[0]
    fitted = moe.fit(table, "mortality", {**FAST, "ensemble": 2})
    va = labelled_split(extract(table, "mortality"), "val")
    members = fitted.module.members
    neural = np.mean([_logit(FittedMoE(m, "mortality", fitted.config).predict_proba(table))
                      for m in members], axis=0)
    lin = _logit(moe.fit_baseline(table, "mortality", "linear", FAST).predict_proba(table))
    val = (table["split"] == "val").to_numpy()
    y = va.y

    def loss(w):
        z = (1 - w) * neural[val] + w * lin[val]
        a, b = platt_scaling(z, y)
        p = np.clip(1 / (1 + np.exp(-(a * z + b))), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    expected = min(LINEAR_WEIGHT_GRID, key=loss)
    chosen = fitted.history["linear"]["weight"]
    assert chosen == expected
    assert float(fitted.module.linear_weight) == chosen
    assert set(fitted.history["linear"]["val_log_loss"]) == {f"{w:g}" for w in LINEAR_WEIGHT_GRID}
    # test labels do not move it: scramble them and refit
    t2 = table.copy()
    test = (t2["split"] == "test").to_numpy()
    t2.loc[test, "mortality"] = 1 - t2.loc[test, "mortality"]
    assert moe.fit(t2, "mortality", {**FAST, "ensemble": 2}).history["linear"]["weight"] == chosen
    fitted.save(tmp_path)
    back = moe.load(tmp_path)
    assert float(back.module.linear_weight) == chosen
    assert np.array_equal(back.predict_proba(table), fitted.predict_proba(table))


def test_linear_weight_goes_to_the_better_part():
    """A linear expert that carries no signal (a constant logit) gets weight 0; against neural
    members whose logit is constant, any weight > 0 is as good as the linear expert alone."""
    from moe.data import extract
    from moe.train import choose_linear_weight, labelled_split

    table = make_table(1500, seed=5, signal=2.0)[0]
    fitted = moe.fit(table, "mortality", {**FAST, "ensemble": 2})
    va = labelled_split(extract(table, "mortality"), "val")
    ens = fitted.module
    for name in ("lin_ehr", "lin_notes", "lin_cxr"):
        getattr(ens.linear, name).zero_()
    ens.linear.lin_pattern.zero_()
    assert choose_linear_weight(ens, va)[0] == 0.0
    fresh = moe.fit(table, "mortality", {**FAST, "ensemble": 2, "max_epochs": 1})
    for m in fresh.module.members:
        m.head[1].weight.data.zero_()
    w, losses = choose_linear_weight(fresh.module, va)
    assert w > 0 and losses[f"{w:g}"] == pytest.approx(losses["1"], abs=1e-6)
    assert losses["0"] > losses["1"] + 0.01
