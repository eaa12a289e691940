"""moe.linear_expert and the MoE's linear expert: the closed-form fit recovers a planted
linear logit, the untrained MoE is exactly its linear expert, a missing modality's vector
is never read, training is kept only when it helps on validation, and the `linear` baseline
is that expert alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import moe
from moe.data import MODALITIES
from moe.linear_expert import design, fit_linear_expert, pattern_bits
from moe.metrics import auroc
from moe.model import ModelConfig, MoE, linear_logit
from moe.toydata import make_table

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


def test_untrained_moe_is_its_linear_expert_and_ignores_missing_vectors():
    torch.manual_seed(0)
    model = MoE(DIMS, ModelConfig(width=16, expert_hidden=16, linear_expert=True)).eval()
    g = torch.Generator().manual_seed(1)
    for m in MODALITIES:
        getattr(model, f"lin_{m}").copy_(torch.randn(DIMS[m], generator=g))
    model.lin_pattern.copy_(torch.randn(8, generator=g))
    x = {m: torch.randn(40, d, generator=g) for m, d in DIMS.items()}
    mask = torch.rand(40, 3, generator=g) < 0.6
    mask[:, 0] = True
    out = model(x, mask)["logits"]
    z = {m: model.encoders[m].inputs(x[m]) for m in MODALITIES}
    assert torch.allclose(out, linear_logit(z, mask, model), atol=1e-6)
    x2 = dict(x)
    x2["cxr"] = torch.where(mask[:, 2:3], x["cxr"], torch.full_like(x["cxr"], float("nan")))
    assert torch.equal(model(x2, mask)["logits"], out)


def test_training_is_kept_only_when_it_helps_on_validation():
    table = make_table(1500, seed=2, signal=2.0)[0]
    frozen = moe.fit(table, "mortality", {**FAST, "linear_expert": True, "lr": 1e-12})
    assert frozen.history["best_epoch"] == -1  # no epoch beat the linear expert
    lin = moe.fit_baseline(table, "mortality", "linear", FAST)
    # ... so the MoE is exactly the `linear` baseline (before Platt scaling)
    a, b = frozen.calibration
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(a * logit(lin.predict_proba(table)) + b,
                       logit(frozen.predict_proba(table)), atol=1e-4)


def test_training_is_kept_when_the_linear_expert_misses_an_interaction():
    rng = np.random.default_rng(0)
    n = 3000
    x = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in DIMS.items()}
    # a label no linear logit can rank: the sign of a product of two modalities' inputs
    p = np.where(x["ehr"][:, 0] * x["notes"][:, 0] > 0, 0.7, 0.1)
    table = pd.DataFrame({
        "stay_id": np.arange(n), "split": np.array(["train", "val", "test"])[np.arange(n) % 3],
        "mortality": (rng.random(n) < p).astype(float),
        "has_ehr": True, "has_notes": True, "has_cxr": True,
        **{m: list(x[m]) for m in MODALITIES},
    })
    cfg = {**FAST, "linear_expert": True, "max_epochs": 40, "patience": 8, "proj_dim": 0,
           "lr": 1e-2, "batch_size": 128}
    fitted = moe.fit(table, "mortality", cfg)
    lin = moe.fit_baseline(table, "mortality", "linear", cfg)
    test = (table.split == "test").to_numpy()
    y = table.mortality.to_numpy()[test]
    assert fitted.history["best_epoch"] >= 0
    assert auroc(y, lin.predict_proba(table)[test]) < 0.6
    assert auroc(y, fitted.predict_proba(table)[test]) > 0.7


@pytest.mark.parametrize("linear", [True, False])
def test_save_load_roundtrip_with_and_without_linear_expert(tmp_path, linear):
    table = make_table(600, seed=3)[0]
    m = moe.fit(table, "mortality", {**FAST, "linear_expert": linear})
    m.save(tmp_path)
    assert np.array_equal(moe.load(tmp_path).predict_proba(table), m.predict_proba(table))
    assert any(k.startswith("lin_") for k in m.module.state_dict()) is linear
