"""`proj_dim_choice="ridge"` (the default): the input projection width is the candidate whose
linear expert has the least leave-one-out squared error on the train stays. Checked against
a brute-force leave-one-out, on data whose signal needs more or fewer directions, and for
the one-projection-for-every-model rule (MoE, neural baselines, peers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

import moe
from moe.data import MODALITIES, extract
from moe.linear_expert import ALPHAS, design, loo_error
from moe.train import MoEConfig, labelled_split, resolve_proj_dim

torch.set_num_threads(1)
FAST = {"max_epochs": 3, "patience": 2, "width": 8, "expert_hidden": 8, "threads": 1,
        "ensemble": 1, "batch_size": 256}
DIMS = {"ehr": 12, "notes": 96, "cxr": 96}


def spread_table(n: int, directions: int, seed: int) -> pd.DataFrame:
    """EHR noise only; the label is linear in `directions` latents, each loading on its own
    random direction of notes and CXR with a decreasing strength, under unit noise. With
    few directions a narrow projection keeps the signal; with many, a narrow projection
    loses most of it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, directions))
    strength = np.linspace(2.5, 1.5, directions)
    w = rng.normal(size=directions)
    y = (rng.random(n) < 1 / (1 + np.exp(-(z @ w) * 0.8 + 1.5))).astype(float)
    cols: dict[str, object] = {"stay_id": np.arange(n), "mortality": y}
    for m in MODALITIES:
        x = rng.normal(size=(n, DIMS[m]))
        if m != "ehr":
            A = rng.normal(size=(directions, DIMS[m]))
            A *= (strength / np.linalg.norm(A, axis=1))[:, None]
            x += z @ A
        cols[m] = list(x.astype(np.float32))
        cols[f"has_{m}"] = np.ones(n, bool)
    split = np.where(np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.85 * n, "val", "test"))
    return pd.DataFrame({**cols, "split": split})


def brute_loo(X: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out squared error of sklearn's Ridge, refitted once per held-out row, at the
    best penalty in ALPHAS."""
    best = np.inf
    for alpha in ALPHAS:
        err = 0.0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            r = Ridge(alpha=alpha).fit(X[keep], y[keep])
            err += float((r.predict(X[i : i + 1])[0] - y[i]) ** 2)
        best = min(best, err / len(y))
    return best


def test_loo_error_is_the_brute_force_leave_one_out() -> None:
    rng = np.random.default_rng(0)
    n = 80
    z = {"ehr": rng.normal(size=(n, 3)), "notes": rng.normal(size=(n, 4)),
         "cxr": rng.normal(size=(n, 2))}  # fmt: skip
    mask = rng.random((n, 3)) < 0.8
    y = (z["ehr"][:, 0] + rng.normal(size=n) > 0.5).astype(float)
    assert loo_error(z, mask, y) == pytest.approx(brute_loo(design(z, mask), y), rel=1e-6)


@pytest.mark.parametrize(("directions", "expected"), [(2, 8), (24, 48)])
def test_the_width_follows_how_many_directions_carry_the_signal(directions, expected) -> None:
    table = spread_table(1600, directions, seed=directions)
    fitted = moe.fit(table, "mortality", {**FAST, "proj_dim_candidates": (8, 48)})
    record = fitted.history["proj_dim"]
    assert record["rule"] == "ridge"
    assert record["chosen"] == expected == fitted.config.proj_dim
    assert fitted.module.members[0].encoders["notes"].proj.shape[1] == expected
    assert fitted.module.linear.encoders["notes"].proj.shape[1] == expected
    # the record's errors are the linear expert's leave-one-out errors at each width
    tr = labelled_split(extract(table, "mortality"), "train")
    for p in (8, 48):
        lin = moe.fit_baseline(table, "mortality", "linear",
                               {**FAST, "proj_dim": p, "proj_dim_choice": "fixed"})  # fmt: skip
        x = {m: torch.from_numpy(tr.x[m]) for m in MODALITIES}
        zz = {m: lin.parts["module"].encoders[m].inputs(x[m]).double().numpy() for m in MODALITIES}
        assert record["loo_mse"][str(p)] == pytest.approx(loo_error(zz, tr.mask, tr.y), rel=1e-9)


def test_every_model_gets_the_same_width_and_no_held_out_label_moves_it() -> None:
    table = spread_table(1600, 24, seed=24)
    cfg = {**FAST, "proj_dim_candidates": (8, 48)}
    chosen = {kind: moe.fit_baseline(table, "mortality", kind, cfg).history["proj_dim"]["chosen"]
              for kind in ("early_fusion", "notes_only", "linear", "fusemoe", "medfuse")}
    assert set(chosen.values()) == {48}
    peer = moe.fit_baseline(table, "mortality", "flex_moe", cfg)
    assert peer.parts["config"].proj_dim == 48  # saved with the peer, so load rebuilds it
    assert "proj_dim" not in moe.fit_baseline(table, "mortality", "gbm", cfg).history
    flipped = table.copy()
    held = (flipped["split"] != "train").to_numpy()
    flipped.loc[held, "mortality"] = 1 - flipped.loc[held, "mortality"]
    tr = labelled_split(extract(table, "mortality"), "train")
    tr2 = labelled_split(extract(flipped, "mortality"), "train")
    c1, r1 = resolve_proj_dim(tr, MoEConfig.from_dict(cfg))
    c2, r2 = resolve_proj_dim(tr2, MoEConfig.from_dict(cfg))
    assert r1 == r2 and c1.proj_dim == c2.proj_dim == 48


def test_candidates_that_project_alike_or_fixed_choice_fit_nothing() -> None:
    tr = labelled_split(extract(spread_table(400, 4, seed=1), "mortality"), "train")
    cfg = MoEConfig.from_dict({"proj_dim": 16})
    # both leave every modality (at most 96 wide) unprojected: no choice to make, the first
    same, rec = resolve_proj_dim(tr, cfg.replace(proj_dim_candidates=(96, 500)))
    assert rec is None and same.proj_dim == 96
    one, rec = resolve_proj_dim(tr, cfg.replace(proj_dim_candidates=(48,)))
    assert rec is None and one.proj_dim == 48
    single_class = tr.subset(np.flatnonzero(tr.y == 0))
    first, rec = resolve_proj_dim(single_class, cfg.replace(proj_dim_candidates=(32, 8)))
    assert rec is None and first.proj_dim == 32
    fixed, rec = resolve_proj_dim(tr, cfg.replace(proj_dim_choice="fixed"))
    assert rec is None and fixed.proj_dim == 16
    assert MoEConfig().proj_dim_choice == "ridge"


def test_the_errors_are_computed_once_per_train_rows(monkeypatch) -> None:
    """Every neural model of a task resolves its width on the same rows: the second call
    reuses the errors; other train labels are other rows, scored afresh."""
    import moe.linear_expert as lin
    from moe.train import width_loo_errors

    calls = []
    real = lin.loo_error
    monkeypatch.setattr(lin, "loo_error", lambda *a: calls.append(1) or real(*a))
    tr = labelled_split(extract(spread_table(400, 4, seed=3), "mortality"), "train")
    first = width_loo_errors(tr, (8, 48))
    assert len(calls) == 2
    assert width_loo_errors(tr, (8, 48)) == first and len(calls) == 2
    flipped = tr.subset(np.arange(len(tr)))
    flipped.y[:] = 1 - flipped.y
    width_loo_errors(flipped, (8, 48))
    assert len(calls) == 4
    # the rows' content, not their object, is the key: a copy of `tr` is not fitted again
    assert width_loo_errors(tr.subset(np.arange(len(tr))), (8, 48)) == first and len(calls) == 4
