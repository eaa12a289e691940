"""`proj_dim_choice="validation"`: the input projection width is the candidate whose first
ensemble member has the least Platt-scaled validation log-loss, recomputed here from
single fits; test labels play no part; the chosen width is saved with the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moe
from moe.data import extract
from moe.toydata import make_table
from moe.train import MoEConfig, labelled_split, platt_log_loss

torch.set_num_threads(1)
FAST = {"max_epochs": 4, "patience": 2, "width": 16, "expert_hidden": 16, "threads": 1,
        "batch_size": 256}
CHOICE = {**FAST, "ensemble": 2, "proj_dim_choice": "validation", "proj_dim_candidates": (4, 32)}


@pytest.fixture(scope="module")
def table():
    return make_table(1500, seed=4, signal=1.5)[0]


@pytest.fixture(scope="module")
def fitted(table):
    return moe.fit(table, "mortality", CHOICE)


def test_chosen_width_is_the_first_members_validation_minimiser(table, fitted) -> None:
    va = labelled_split(extract(table, "mortality"), "val")
    val = (table["split"] == "val").to_numpy()
    singles = {
        p: moe.fit(table, "mortality", {**FAST, "ensemble": 1, "linear_weight": 0.0,
                                        "proj_dim": p, "proj_dim_choice": "fixed"})  # fmt: skip
        for p in (4, 32)
    }
    losses = {}
    for p, f in singles.items():
        proba = np.clip(f.predict_proba(table)[val], 1e-7, 1 - 1e-7)
        losses[p] = platt_log_loss(np.log(proba / (1 - proba)), va.y)
    expected = min(losses, key=losses.get)
    record = fitted.history["proj_dim"]
    assert record["rule"] == "validation"
    assert record["chosen"] == expected == fitted.config.proj_dim
    assert record["val_log_loss"] == pytest.approx({str(p): v for p, v in losses.items()},
                                                   abs=1e-4)  # fmt: skip
    # the first member is that single fit, reused rather than fitted again
    first = fitted.module.members[0]
    single = singles[expected].module
    for (k, v), (k2, v2) in zip(first.state_dict().items(), single.state_dict().items(),
                                strict=True):  # fmt: skip
        assert k == k2 and torch.equal(v, v2), k
    # every member and the linear expert read inputs projected to the chosen width
    for m in fitted.module.members:
        assert m.encoders["cxr"].proj.shape[1] == expected
    assert fitted.module.linear.encoders["cxr"].proj.shape[1] == expected


def test_test_labels_do_not_move_the_choice_and_it_survives_save(table, fitted, tmp_path) -> None:
    t2 = table.copy()
    test = (t2["split"] == "test").to_numpy()
    t2.loc[test, "mortality"] = 1 - t2.loc[test, "mortality"]
    again = moe.fit(t2, "mortality", CHOICE)
    assert again.history["proj_dim"] == fitted.history["proj_dim"]
    fitted.save(tmp_path)
    back = moe.load(tmp_path)
    assert back.config.proj_dim == fitted.config.proj_dim
    assert np.array_equal(back.predict_proba(table), fitted.predict_proba(table))


def test_fixed_width_is_used_as_is_and_bad_settings_are_refused(table) -> None:
    plain = moe.fit(table, "mortality", {**FAST, "ensemble": 1, "proj_dim": 8,
                                         "proj_dim_choice": "fixed"})  # fmt: skip
    assert "proj_dim" not in plain.history and plain.config.proj_dim == 8
    assert plain.module.members[0].encoders["cxr"].proj.shape[1] == 8
    with pytest.raises(ValueError, match="proj_dim_choice"):
        MoEConfig.from_dict({"proj_dim_choice": "test"})
    with pytest.raises(ValueError, match="proj_dim_candidates"):
        MoEConfig.from_dict({"proj_dim_candidates": ()})
