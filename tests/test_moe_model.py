"""moe.model / moe.train: masking, routing, balance loss, learning, determinism, save/load."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

import moe
from moe.metrics import auroc
from moe.model import ModelConfig, MoE, load_balance_loss, route
from moe.toydata import make_table
from moe.train import FittedMoE, MoEConfig, TrainConfig, modality_dropout, platt_scaling

torch.set_num_threads(1)
DIMS = {"ehr": 6, "notes": 5, "cxr": 4}
FAST = {"max_epochs": 4, "patience": 2, "ensemble": 1, "width": 16, "expert_hidden": 16, "threads": 1,
        "batch_size": 256}


def _batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    mask = torch.ones(n, 3, dtype=torch.bool)
    mask[: n // 2, 2] = False  # first half lacks CXR
    mask[: n // 4, 1] = False  # first quarter lacks notes too
    return x, mask


def _grads(model, x, mask, rows):
    model.zero_grad()
    out = model(x, mask)
    out["logits"][rows].sum().backward()
    return out, {k: p.grad.clone() if p.grad is not None else None
                 for k, p in model.named_parameters()}


def test_masked_experts_get_zero_weight_and_missing_input_changes_nothing():
    torch.manual_seed(0)
    model = MoE(DIMS, ModelConfig(width=16, expert_hidden=16, top_k=2)).eval()
    x, mask = _batch()
    out = model(x, mask)
    needs_cxr = torch.tensor(["C" in n for n in model.expert_names])
    lacking = ~mask[:, 2]
    assert (out["weights"][lacking][:, needs_cxr] == 0).all()
    assert torch.allclose(out["weights"].sum(1), torch.ones(len(mask)))
    rows = torch.nonzero(lacking).squeeze(1)
    out_a, g_a = _grads(model, x, mask, rows)
    x2 = dict(x)
    x2["cxr"] = x["cxr"].clone()
    x2["cxr"][lacking] = 1e3 * torch.randn(int(lacking.sum()), DIMS["cxr"])
    out_b, g_b = _grads(model, x2, mask, rows)
    assert torch.equal(out_a["logits"], out_b["logits"])
    for k in g_a:
        assert (g_a[k] is None and g_b[k] is None) or torch.equal(g_a[k], g_b[k]), k
    # and the CXR experts receive no gradient from rows lacking CXR
    for e, name in enumerate(model.expert_names):
        if "C" in name:
            for p in model.experts[e].parameters():
                assert p.grad is None or torch.count_nonzero(p.grad) == 0


def test_without_masking_every_expert_is_eligible():
    model = MoE(DIMS, ModelConfig(width=8, expert_hidden=8, availability_masking=False))
    _, mask = _batch()
    assert model.eligibility(mask).all()


def test_topk_picks_k_eligible_experts_and_handles_rows_with_none():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 5.0, 4.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    eligible = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    w, probs, disp = route(logits, eligible, k=2)
    assert torch.equal(w[0] > 0, torch.tensor([True, True, False, False]))
    assert torch.equal(w[1] > 0, torch.tensor([True, False, True, False]))  # 5, 9 ineligible
    assert torch.allclose(w[1, [0, 2]], torch.softmax(torch.tensor([0.0, 4.0]), 0))
    assert torch.equal(w[2], torch.zeros(4)) and not torch.isnan(probs).any()
    assert torch.equal(disp.sum(1), torch.tensor([2.0, 2.0, 0.0]))
    w1, _, _ = route(logits, eligible, k=1)
    assert torch.equal((w1 > 0).sum(1), torch.tensor([1, 1, 0]))


def test_load_balance_is_one_when_uniform_and_grows_when_collapsed():
    n, E = 64, 4
    eligible = torch.ones(n, E, dtype=torch.bool)
    eligible[: n // 2, 3] = False  # half the rows cannot use expert 3
    uniform_logits = torch.zeros(n, E)
    w, probs, disp = route(uniform_logits + 1e-3 * torch.arange(n * E).reshape(n, E).remainder(5),
                           eligible, k=4)
    assert load_balance_loss(probs, disp, eligible).item() == pytest.approx(1.0, abs=1e-2)
    collapsed = torch.zeros(n, E)
    collapsed[:, 0] = 10.0
    w, probs, disp = route(collapsed, eligible, k=1)
    assert load_balance_loss(probs, disp, eligible).item() > 2.0


def test_modality_dropout_hides_but_keeps_one_modality():
    mask = torch.ones(2000, 3, dtype=torch.bool)
    mask[:500, 1:] = False
    out = modality_dropout(mask, 0.5, torch.Generator().manual_seed(0))
    assert out.any(1).all() and not (out & ~mask).any()
    assert torch.equal(out[:500], mask[:500])  # a lone modality is never hidden
    assert 0.3 < 1 - out[500:].float().mean() < 0.5


@pytest.fixture(scope="module")
def toy():
    table, truth = make_table(1500, seed=1, signal=2.0)
    return table, truth


@pytest.fixture(scope="module")
def fitted(toy):
    return moe.fit(toy[0], "long_los", {**FAST, "max_epochs": 12, "patience": 4})


def test_model_learns_planted_signal(toy, fitted):
    table, truth = toy
    test = (table.split == "test").to_numpy()
    y = table.long_los.to_numpy(dtype=float)[test]
    p = fitted.predict_proba(table)[test]
    oracle = auroc(y, truth.oracle_long_los.to_numpy()[test])
    assert auroc(y, p) > 0.7 and auroc(y, p) > oracle - 0.08
    assert 0.5 * y.mean() < p.mean() < 1.5 * y.mean()  # prior correction keeps calibration


def test_retraining_is_deterministic(toy):
    a = moe.fit(toy[0], "mortality", FAST).predict_proba(toy[0])
    b = moe.fit(toy[0], "mortality", FAST).predict_proba(toy[0])
    assert np.array_equal(a, b)


def test_save_load_roundtrip(toy, fitted, tmp_path):
    fitted.save(tmp_path)
    assert {"model.pt", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    again = FittedMoE.load(tmp_path)
    assert np.array_equal(again.predict_proba(toy[0]), fitted.predict_proba(toy[0]))
    assert again.expert_names == fitted.expert_names


def test_hiding_a_modality_by_flag_equals_drop(toy, fitted):
    table = toy[0]
    rows = np.zeros(len(table), bool)
    rows[::3] = True
    hidden = table.copy()
    hidden.loc[rows, "has_cxr"] = False
    hidden["cxr"] = [None if r else v for r, v in zip(rows, hidden.cxr, strict=True)]
    p_flag = fitted.predict_proba(hidden)
    p_drop = fitted.predict_proba(table, drop={"cxr": rows})
    assert np.array_equal(p_flag, p_drop)
    w = fitted.gate_weights(hidden)
    c_cols = [i for i, n in enumerate(fitted.expert_names) if "C" in n]
    assert w.shape == (len(table), len(fitted.expert_names))
    assert (w[rows][:, c_cols] == 0).all()
    some = hidden[["has_ehr", "has_notes", "has_cxr"]].any(axis=1).to_numpy()
    assert np.allclose(w[some].sum(1), 1.0, atol=1e-5)
    assert (w[~some] == 0).all()  # a stay with nothing is routed nowhere (head bias only)


def test_single_expert_ablation_has_one_expert(toy):
    m = moe.fit(toy[0], "mortality", {**FAST, "max_epochs": 1, "single_expert": True})
    assert m.expert_names == ["E+N+C"]
    assert np.allclose(m.gate_weights(toy[0]), 1.0)


def test_unused_frame_columns_are_ignored(toy, fitted):
    extra = toy[0].assign(something_else=pd.Series(range(len(toy[0]))))
    assert np.array_equal(fitted.predict_proba(extra), fitted.predict_proba(toy[0]))


@pytest.mark.parametrize("layers", [1, 2])
def test_batched_experts_equal_calling_each_expert(layers):
    torch.manual_seed(0)
    model = MoE(DIMS, ModelConfig(width=16, expert_hidden=8, expert_layers=layers)).eval()
    tok = torch.randn(10, 3 * 16)
    parts = dict(zip(("ehr", "notes", "cxr"), tok.split(16, dim=1), strict=True))
    ref = torch.stack(
        [e(torch.cat([parts[m] for m in s], dim=1)) for e, s in zip(model.experts, model.subsets,
                                                                   strict=True)], dim=1)
    assert torch.allclose(model.expert_outputs(tok), ref, atol=1e-5)


def test_default_routes_two_experts_plus_shared_expert():
    cfg = MoEConfig()
    assert cfg.top_k == 2 and cfg.shared_expert
    model = MoE(DIMS, ModelConfig(width=8, expert_hidden=8)).eval()
    x, mask = _batch()
    w = model(x, mask)["weights"]
    assert ((w > 0).sum(1) <= 2).all()
    assert model.shared is not None
    assert MoE(DIMS, ModelConfig(width=8, expert_hidden=8, single_expert=True)).shared is None


def test_pca_projection_roundtrip(tmp_path):
    table, _ = make_table(600, seed=3, dims={"ehr": 6, "notes": 12, "cxr": 40})
    m = moe.fit(table, "long_los", {**FAST, "max_epochs": 1, "proj_dim": 8,
                                          "proj_dim_choice": "fixed"})
    neural, linear = m.module.members[0], m.module.linear
    enc = neural.encoders["cxr"]
    assert enc.projected and enc.proj.shape == (40, 8)
    assert not neural.encoders["ehr"].projected  # narrower than proj_dim: used as is
    assert torch.equal(linear.encoders["cxr"].proj, enc.proj)  # the linear expert's too
    m.save(tmp_path)
    again = FittedMoE.load(tmp_path)
    assert np.array_equal(again.predict_proba(table), m.predict_proba(table))


@pytest.mark.parametrize("n", [30, 200])  # fewer rows than columns (SVD route), more (eigh)
def test_top_principal_directions_match_a_full_eigendecomposition(n):
    from moe.train import _PCA_CACHE, top_principal_directions

    rng = np.random.default_rng(n)
    v = rng.normal(size=(n, 96)) @ np.diag(np.linspace(3, 0.1, 96))
    v -= v.mean(axis=0)
    _PCA_CACHE.clear()
    val, vec = top_principal_directions(v, 8)
    w, full = np.linalg.eigh(v.T @ v / (n - 1))
    top = np.argsort(w)[::-1][:8]
    assert np.allclose(val, w[top])
    # same directions up to sign, and signs fixed (largest-magnitude entry positive)
    assert np.allclose(np.abs((vec * full[:, top]).sum(axis=0)), 1.0)
    assert (vec[np.abs(vec).argmax(axis=0), np.arange(8)] > 0).all()
    again = top_principal_directions(v, 8)  # memoised: same values, not a shared array
    again[1][:] = 0
    assert np.array_equal(top_principal_directions(v, 8)[1], vec)


def test_seed_ensemble_averages_members_and_round_trips(tmp_path):
    table = make_table(400, seed=4, dims={"ehr": 6, "notes": 9, "cxr": 12})[0]
    cfg = {**FAST, "max_epochs": 2, "linear_weight": 0.0}  # the blend: test_linear_expert.py
    single = moe.fit(table, "mortality", cfg)
    ens = moe.fit(table, "mortality", {**cfg, "ensemble": 2})
    assert len(ens.module.members) == 2 and ens.expert_names == single.expert_names
    # member 0 is the single model with the same seed; the prediction is the mean logit
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    m0 = FittedMoE(ens.module.members[0], "mortality", single.config, None, single.calibration)
    m1 = FittedMoE(ens.module.members[1], "mortality", single.config)
    assert np.allclose(m0.predict_proba(table), single.predict_proba(table), atol=1e-6)
    raw0 = FittedMoE(ens.module.members[0], "mortality", single.config)
    mean = (logit(raw0.predict_proba(table)) + logit(m1.predict_proba(table))) / 2
    a, b = ens.calibration  # the ensemble's Platt scaling acts on the mean logit
    assert np.allclose(logit(ens.predict_proba(table)), a * mean + b, atol=1e-4)
    assert not np.allclose(m0.predict_proba(table), m1.predict_proba(table))
    assert ens.gate_weights(table).shape == (len(table), len(ens.expert_names))
    ens.save(tmp_path)
    assert np.array_equal(moe.load(tmp_path).predict_proba(table), ens.predict_proba(table))


def test_config_is_split_into_architecture_and_training_but_reads_and_writes_flat():
    cfg = MoEConfig(top_k=1, lr=3e-4, extra={"note": 1})
    assert cfg.model == ModelConfig(top_k=1) and cfg.train == TrainConfig(lr=3e-4)
    assert (cfg.top_k, cfg.lr, cfg.extra) == (1, 3e-4, {"note": 1})
    flat = cfg.to_dict()
    assert flat["top_k"] == 1 and flat["lr"] == 3e-4 and flat["subsets"][0] == ["ehr"]
    assert MoEConfig.from_dict(flat) == cfg  # config.json round trip
    nested = MoEConfig.from_dict({"model": {"top_k": 1}, "train": {"lr": 3e-4},
                                  "extra": {"note": 1}})
    assert nested == cfg
    again = cfg.replace(seed=5, width=32)
    assert (again.seed, again.width, again.top_k, cfg.seed, cfg.width) == (5, 32, 1, 0, 128)
    with pytest.raises(ValueError, match="unknown MoEConfig fields"):
        MoEConfig.from_dict({"top_kk": 1})
    with pytest.raises(AttributeError):
        _ = cfg.top_kk
    with pytest.raises(ValueError, match="ensemble"):
        MoEConfig(ensemble=0)
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(top_k=0)
    assert set(flat) == {f.name for f in fields(ModelConfig)} | {
        f.name for f in fields(TrainConfig)} | {"extra"}


def test_platt_scaling_recovers_a_known_logistic_map():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200_000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(float)
    a, b = platt_scaling(z, y)
    assert abs(a - 2.0) < 0.03 and abs(b + 1.0) < 0.03
    # too few of one class, or a fit that would reverse the ranking: no calibration
    assert platt_scaling(z[:50], np.r_[np.ones(5), np.zeros(45)]) == (1.0, 0.0)
    assert platt_scaling(-z, y) == (1.0, 0.0)


def test_calibration_keeps_the_ranking_and_matches_validation_prevalence(tmp_path):
    table = make_table(1500, seed=5, dims={"ehr": 6, "notes": 9, "cxr": 12})[0]
    cfg = {**FAST, "max_epochs": 3}
    raw = moe.fit(table, "mortality", {**cfg, "calibration": "none"})
    cal = moe.fit(table, "mortality", {**cfg, "calibration": "platt"})
    assert raw.calibration == (1.0, 0.0) and cal.calibration != (1.0, 0.0)
    p_raw, p_cal = raw.predict_proba(table), cal.predict_proba(table)
    # the same network, so the same order of stays: a monotone map of the raw probabilities
    order = np.argsort(p_raw, kind="stable")
    assert (np.diff(p_cal[order]) >= -1e-12).all()
    # an unpenalised logistic fit with an intercept matches the mean of what it was fitted on
    val = (table.split == "val").to_numpy() & table.mortality.notna().to_numpy()
    y_val = table.mortality.to_numpy()[val]
    assert abs(p_cal[val].mean() - y_val.mean()) < 1e-4
    assert abs(p_raw[val].mean() - y_val.mean()) > abs(p_cal[val].mean() - y_val.mean())
    cal.save(tmp_path)
    back = moe.load(tmp_path)
    assert back.calibration == cal.calibration
    assert np.array_equal(back.predict_proba(table), p_cal)
