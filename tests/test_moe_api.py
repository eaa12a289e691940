"""moe.api and assets/models.py: baselines, table formats, null labels, output files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from dagster import DagsterInstance, materialize

import moe
from moe.api import predictions, write_outputs
from moe.baselines import KINDS
from moe.toydata import make_table

torch.set_num_threads(1)
FAST = {"max_epochs": 3, "patience": 2, "ensemble": 1, "width": 16, "expert_hidden": 16, "threads": 1}


@pytest.fixture(scope="module")
def toy():
    return make_table(600, seed=2, dims={"ehr": 7, "notes": 11, "cxr": 40})[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_baseline_gives_one_probability_per_row(toy, kind):
    m = moe.fit_baseline(toy, "mortality", kind, FAST)
    p = m.predict_proba(toy)
    assert p.shape == (len(toy),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    if kind == "cxr_only":  # stays without CXR get the train prevalence
        train = toy[toy.split == "train"]
        prev = train.mortality.astype(float).mean()
        assert np.allclose(p[~toy.has_cxr.to_numpy()], prev)


def test_pyarrow_and_pandas_give_the_same_model(toy):
    a = moe.fit(toy, "mortality", FAST).predict_proba(toy)
    arrow = pa.Table.from_pandas(toy, preserve_index=False)
    b = moe.fit(arrow, "mortality", FAST).predict_proba(arrow)
    assert np.array_equal(a, b)


def test_vectors_of_a_new_length_are_rejected_clearly(toy):
    m = moe.fit(toy, "mortality", {**FAST, "max_epochs": 1})
    other = make_table(50, seed=3, dims={"ehr": 7, "notes": 12, "cxr": 40})[0]
    with pytest.raises(ValueError, match="notes"):
        m.predict_proba(other)


def test_null_labels_are_left_out_and_files_are_written(toy, tmp_path):
    m = moe.fit(toy, "readmission", {**FAST, "max_epochs": 1})
    pred, met = write_outputs(tmp_path, m, toy, "readmission", n_boot=20)
    assert toy.readmission.isna().any()
    assert len(pred) == toy.readmission.notna().sum()
    on_disk = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(on_disk.columns) == ["stay_id", "split", "y_true", "y_prob"]
    assert set(on_disk.split) == {"train", "val", "test"}
    assert {"model.pt", "config.json", "metrics.json"} <= {p.name for p in tmp_path.iterdir()}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["test"]["auroc_ci"]) == 2 and saved["test_by_pattern"]
    assert np.allclose(predictions(moe.api.load(tmp_path), toy, "readmission").y_prob, pred.y_prob)


def test_model_asset_without_upstream_says_how_to_build_it(tmp_path, monkeypatch):
    import assets.models as models
    from plumbing.resources import ProjectResource

    result = materialize(
        [models.BY_NAME["moe_mortality"]],
        resources={"project": ProjectResource(data_dir=str(tmp_path))},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    msg = " ".join(
        str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure
    )
    assert "--select '*moe_mortality'" in msg and "make demo" in msg


def test_model_asset_writes_its_folder(toy, tmp_path):
    import assets.models as models
    from plumbing.resources import ProjectResource

    pq.write_table(pa.Table.from_pandas(toy, preserve_index=False),
                   tmp_path / "multimodal_dataset.parquet")
    result = materialize(
        [models.BY_NAME["moe_long_los"]],
        resources={"project": ProjectResource(data_dir=str(tmp_path))},
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"moe_long_los": {"config": {**FAST, "n_boot": 20}}}},
    )
    assert result.success
    out = tmp_path / "models" / "long_los"
    assert {"model.pt", "config.json", "metrics.json", "predictions.parquet", "roc.png"} <= {
        p.name for p in out.iterdir()
    }
    md = result.asset_materializations_for_node("moe_long_los")[0].metadata
    assert "test AUROC (95% CI)" in md and "pattern" in md["test by availability"].value
    fitted = moe.load(out)  # the width the fit chose on the train stays, shown in the UI
    assert md["input width (proj_dim)"].value == fitted.config.proj_dim
    assert md["input width chosen by"].value == "ridge" == fitted.history["proj_dim"]["rule"]


def test_launchpad_defaults_match_the_model_config():
    """The Dagster `Config` of the model assets must not drift from `moe.MoEConfig`."""
    from assets.models import MoETrainConfig, moe_config
    from moe.train import MoEConfig

    launchpad = moe_config(MoETrainConfig())
    library = MoEConfig()
    for name, value in launchpad.items():
        # the launchpad holds a tuple setting as a list; moe.fit makes it a tuple again
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(library, name) == expected, name


def test_neural_baselines_get_the_same_input_projection_as_the_moe(toy):
    """A comparison with the MoE must not be a comparison of input projections."""
    cfg = {**FAST, "proj_dim": 8, "proj_dim_choice": "fixed"}
    ef = moe.fit_baseline(toy, "mortality", "early_fusion", cfg).parts["module"]
    fitted = moe.fit(toy, "mortality", cfg).module
    mixture, linear = fitted.members[0], fitted.linear
    assert ef.projected == {"ehr": False, "notes": True, "cxr": True}
    for m, d in (("notes", 11), ("cxr", 40)):
        assert torch.equal(getattr(ef, f"proj_{m}"), mixture.encoders[m].proj)
        assert torch.equal(linear.encoders[m].proj, mixture.encoders[m].proj)
        assert not torch.equal(getattr(ef, f"proj_{m}"), torch.eye(d)[:, :8])  # PCA was fitted
    off = moe.fit_baseline(toy, "mortality", "early_fusion",
                           {**FAST, "proj_dim": 0, "proj_dim_choice": "fixed"})  # fmt: skip
    assert not any(off.parts["module"].projected.values())
    # with the default width choice (on the train stays) too
    ef_fit = moe.fit_baseline(toy, "mortality", "early_fusion", FAST)
    moe_fit = moe.fit(toy, "mortality", FAST)
    assert ef_fit.history["proj_dim"] == moe_fit.history["proj_dim"]
    chosen = moe_fit.config.proj_dim
    assert chosen == moe_fit.history["proj_dim"]["chosen"]
    for m, d in (("notes", 11), ("cxr", 40)):
        if d > chosen:
            assert torch.equal(getattr(ef_fit.parts["module"], f"proj_{m}"),
                               moe_fit.module.members[0].encoders[m].proj)  # fmt: skip


def test_unchanged_inputs_reuse_fits_and_any_change_refits(toy, tmp_path):
    """A re-run with the same dataset bytes, settings and moe/ code reuses the outputs (the
    fit is deterministic); a change to any of them, or force, refits."""
    pq.write_table(pa.Table.from_pandas(toy, preserve_index=False),
                   tmp_path / "multimodal_dataset.parquet")
    cfg = {**FAST, "n_boot": 20, "kinds": ["ehr_only"], "ablations": []}
    moe_cfg = {k: v for k, v in cfg.items() if k not in ("kinds", "ablations")}
    import assets.models as models

    def run(moe_c, base_c):
        import dagster as dg

        from plumbing.resources import ProjectResource

        r = dg.materialize(
            [models.BY_NAME["moe_long_los"], models.BY_NAME["baselines_long_los"]],
            resources={"project": ProjectResource(data_dir=str(tmp_path))},
            instance=DagsterInstance.ephemeral(),
            run_config={"ops": {"moe_long_los": {"config": moe_c},
                                "baselines_long_los": {"config": base_c}}},
        )
        assert r.success
        return (r.asset_materializations_for_node("moe_long_los")[0].metadata,
                r.asset_materializations_for_node("baselines_long_los")[0].metadata)

    out = tmp_path / "models" / "long_los"
    first_moe, first_base = run(moe_cfg, cfg)
    assert first_moe["reused"].value is False and first_base["reused"].value == []
    pred_mtime = (out / "predictions.parquet").stat().st_mtime_ns
    again_moe, again_base = run(moe_cfg, cfg)
    assert again_moe["reused"].value is True and again_base["reused"].value == ["ehr_only"]
    assert (out / "predictions.parquet").stat().st_mtime_ns == pred_mtime
    assert again_moe["test AUROC"] == first_moe["test AUROC"]
    assert again_base["test"] == first_base["test"]

    assert run({**moe_cfg, "seed": 1}, cfg)[0]["reused"].value is False  # a setting changed
    assert run({**moe_cfg, "seed": 1, "force": True}, cfg)[0]["reused"].value is False
    changed = toy.copy()
    changed.loc[0, "age"] = float(changed.loc[0, "age"]) + 1  # one value of the dataset
    pq.write_table(pa.Table.from_pandas(changed, preserve_index=False),
                   tmp_path / "multimodal_dataset.parquet")
    m, b = run({**moe_cfg, "seed": 1}, cfg)
    assert m["reused"].value is False and b["reused"].value == []
    (out / "predictions.parquet").unlink()  # an output gone: refit, not a stale stamp
    assert run({**moe_cfg, "seed": 1}, cfg)[0]["reused"].value is False


def test_code_change_changes_the_fit_key(tmp_path, monkeypatch):
    from plumbing import reuse

    f = tmp_path / "x.parquet"
    f.write_bytes(b"abc")
    key = reuse.fit_key([f], {"a": 1})
    assert reuse.fit_key([f], {"a": 1}) == key
    monkeypatch.setattr(reuse, "code_digest", lambda: "other code")
    assert reuse.fit_key([f], {"a": 1}) != key


def test_report_is_reused_until_a_model_output_changes(toy, tmp_path):
    import dagster as dg

    import assets.models as models
    from assets.report import moe_report
    from plumbing.resources import ProjectResource

    pq.write_table(pa.Table.from_pandas(toy, preserve_index=False),
                   tmp_path / "multimodal_dataset.parquet")
    moe_cfg = {**FAST, "n_boot": 20}
    rep_cfg = {"n_boot": 20, "fractions": [0.0, 1.0], "refit_early_fusion": False}

    def run(base_seed):
        r = dg.materialize(
            [models.BY_NAME["moe_long_los"], models.BY_NAME["baselines_long_los"], moe_report],
            resources={"project": ProjectResource(data_dir=str(tmp_path))},
            instance=DagsterInstance.ephemeral(),
            run_config={"ops": {
                "moe_long_los": {"config": moe_cfg},
                "baselines_long_los": {"config": {**moe_cfg, "seed": base_seed,
                                                  "kinds": ["ehr_only"], "ablations": []}},
                "moe_report": {"config": rep_cfg},
            }},
        )
        assert r.success
        return r.asset_materializations_for_node("moe_report")[0].metadata

    first = run(0)
    assert first["reused"].value is False
    again = run(0)
    assert again["reused"].value is True
    assert again["long_los: test metrics"] == first["long_los: test metrics"]
    assert run(1)["reused"].value is False  # a baseline's predictions changed


def test_gbm_truncated_to_its_best_iteration_equals_a_refit(toy):
    """The GBM keeps its first best_iter trees instead of refitting with max_iter=best_iter;
    boosting without subsampling is deterministic, so the two must predict the same."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from moe.baselines import _FirstTrees

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    params = dict(learning_rate=0.1, max_leaf_nodes=7, early_stopping=False, random_state=0)
    full = HistGradientBoostingClassifier(max_iter=40, **params).fit(X, y)
    refit = HistGradientBoostingClassifier(max_iter=17, **params).fit(X, y)
    assert np.allclose(_FirstTrees(full, 17).decision_function(X), refit.decision_function(X))
    m = moe.fit_baseline(toy, "mortality", "gbm", FAST)
    assert m.history["best_iter"] >= 1 and np.isfinite(m.predict_proba(toy)).all()


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_gbm_bin_codes_grow_the_trees_sklearn_grows_on_raw_vectors(toy, class_weight):
    """GbmFeatures hands the GBM bin codes, computing the edges itself (sklearn's weighted
    binning is slow). A GBM on the codes must make exactly the splits of a GBM on the raw
    vectors, with and without class weights: same edges, same trees, same predictions.
    The toy vectors have NaN and columns with more distinct values than bins; one column
    is rounded to a few distinct values."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.utils.class_weight import compute_sample_weight

    from moe.baselines import GbmFeatures
    from moe.data import extract

    a = extract(toy, "mortality")
    a.x["ehr"][:, 0] = np.round(a.x["ehr"][:, 0])
    weights = compute_sample_weight(class_weight, a.y) if class_weight else None
    features = GbmFeatures(a, weights)
    raw, codes = features.vectors(a), features(a)
    assert np.array_equal(np.isnan(raw), np.isnan(codes))
    assert max(len(np.unique(c[~np.isnan(c)])) for c in codes.T) <= 255
    assert max(len(np.unique(c[~np.isnan(c)])) for c in raw.T) > 255  # quantile path exercised
    params = dict(max_iter=30, max_leaf_nodes=7, early_stopping=False, random_state=0,
                  class_weight=class_weight)
    on_raw = HistGradientBoostingClassifier(**params).fit(raw, a.y)
    on_codes = HistGradientBoostingClassifier(**params).fit(codes, a.y)
    assert np.allclose(on_raw.decision_function(raw), on_codes.decision_function(codes))


def test_weighted_quantiles_with_unit_weights_are_numpys_averaged_inverted_cdf():
    from moe.baselines import weighted_quantiles

    rng = np.random.default_rng(0)
    levels = np.linspace(0, 100, 256)[1:-1]
    for v in (rng.normal(size=1000), np.repeat(np.arange(400.0), 3), np.arange(1020.0)):
        expected = np.percentile(v, levels, method="averaged_inverted_cdf")
        assert np.allclose(weighted_quantiles(v, np.ones(len(v)), levels), expected)


def test_a_table_without_vector_columns_is_refused_with_the_fix(toy):
    """Misnamed vector columns must not train a model on the availability pattern alone;
    a table that lacks only some modalities still fits (those are all-missing)."""
    renamed = toy.rename(columns={"ehr": "ehr_vec", "notes": "notes_vec", "cxr": "cxr_vec"})
    with pytest.raises(KeyError, match=r"none of the vector columns \['ehr', 'notes', 'cxr'\]"):
        moe.fit(renamed, "mortality", FAST)
    with pytest.raises(KeyError, match="none of the vector columns"):
        moe.fit_baseline(renamed, "mortality", "early_fusion", FAST)
    ehr_only = toy.drop(columns=["notes", "cxr"])
    fitted = moe.fit(ehr_only, "mortality", FAST)
    assert fitted.dims["notes"] == 1 and np.isfinite(fitted.predict_proba(ehr_only)).all()
