"""Report tables, robustness curve, paired bootstrap and the report builder on toy data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import moe
from moe import evaluation as ev
from moe.api import fit_ablation, write_outputs
from moe.metrics import auroc
from moe.report import pattern_markdown
from moe.toydata import make_table

QUICK = {"max_epochs": 3, "patience": 2, "ensemble": 1, "width": 16, "expert_hidden": 16, "batch_size": 256,
         "device": "cpu", "threads": 1}
TASK = "mortality"


@pytest.fixture(scope="module")
def toy() -> tuple[pd.DataFrame, pd.DataFrame]:
    table, truth = make_table(n=600, seed=3, dims={"ehr": 8, "notes": 8, "cxr": 8},
                              oracle_samples=8)
    # distinctive ids (8 digits), so the report's text can be searched for them
    ids = {int(s): 31_000_017 + 7 * i for i, s in enumerate(table["stay_id"])}
    table["stay_id"] = table["stay_id"].map(ids)
    truth["stay_id"] = truth["stay_id"].map(ids)
    return table, truth


@pytest.fixture(scope="module")
def fitted(toy):
    table, _ = toy
    return moe.fit(table, TASK, QUICK), moe.fit_baseline(table, TASK, "early_fusion", QUICK)


@pytest.mark.parametrize("which", [0, 1])
def test_robustness_curve_endpoints(toy, fitted, which):
    table, _ = toy
    model = fitted[which]
    curve = ev.robustness_curve(model, table, TASK, "notes", fractions=(0.0, 0.5, 1.0))
    test = ev.test_rows(table, TASK)
    y = test[TASK].astype(float).to_numpy()
    assert curve["auroc"].iloc[0] == pytest.approx(auroc(y, model.predict_proba(test)))
    assert curve["auroc"].iloc[-1] == pytest.approx(
        auroc(y, model.predict_proba(test, drop="notes")))
    assert curve["n_hidden"].iloc[-1] == int(test["has_notes"].sum())
    assert 0 < curve["n_hidden"].iloc[1] < curve["n_hidden"].iloc[-1]


def _pred(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    split = np.where(np.arange(n) < n // 3, "val", "test")
    return pd.DataFrame({"stay_id": np.arange(n) + 100, "split": split, "y_true": y,
                         "y_prob": p})


def test_paired_bootstrap_identical_predictions():
    p = _pred()
    c = ev.paired_comparison(p, p.copy(), n_boot=200)
    assert c["verdict"] == "no difference"
    assert c["diff"] == 0.0


def test_paired_bootstrap_detects_a_better_model():
    p = _pred()
    good = p.copy()
    good["y_prob"] = np.where(good["y_true"] == 1, 0.9, 0.1)
    assert ev.paired_comparison(good, p, n_boot=200)["verdict"] == "a better"
    assert ev.paired_comparison(p, good, n_boot=200)["verdict"] == "b better"


def test_subgroup_counts_add_up(toy, fitted):
    table, _ = toy
    pred = moe.api.predictions(fitted[0], table, TASK)
    sub = ev.subgroup_table({"moe": pred}, table)
    n_test = int((pred.split == "test").sum())
    for _, g in sub.groupby("group"):
        assert g["n"].sum() == n_test
    assert set(sub["group"]) == {"sex", "age"}


def test_pattern_and_gate_tables(toy, fitted):
    table, _ = toy
    pred = ev.attach_patterns(moe.api.predictions(fitted[0], table, TASK)[
        ["stay_id", "split", "y_true", "y_prob"]], table)
    pt = ev.pattern_table({"moe": pred})
    assert pt["n"].sum() == int((pred.split == "test").sum())
    gates = ev.gate_by_pattern(fitted[0], table, TASK)
    assert gates["n"].sum() == pt["n"].sum()
    w = gates.drop(columns="n").to_numpy()
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-4)


def test_pattern_markdown_one_model_per_metric_many_models_per_model():
    rows = [  # api.metrics_of's test_by_pattern: one model, no `model` key
        {"pattern": "E", "n": 4, "prevalence": 0.25, "auroc": 0.5, "auprc": float("nan")},
        {"pattern": "E+N", "n": 6, "prevalence": 0.5, "auroc": 0.75, "auprc": 0.8},
    ]
    assert pattern_markdown(rows, metrics=("auroc", "auprc")).splitlines() == [
        "| pattern | n | prevalence | AUROC | AUPRC |",
        "|---|---:|---:|---:|---:|",
        "| E+N | 6 | 0.500 | 0.750 | 0.800 |",  # most modalities first
        "| E | 4 | 0.250 | 0.500 | n/a |",
    ]
    frame = pd.DataFrame(  # evaluation.pattern_table: one row per model and pattern
        [{"model": "moe", **r} for r in rows] + [{**rows[0], "model": "gbm", "auroc": 0.625}]
    )
    assert pattern_markdown(frame).splitlines() == [
        "| pattern | n | prevalence | moe | gbm |",
        "|---|---:|---:|---:|---:|",
        "| E+N | 6 | 0.500 | 0.750 | n/a |",
        "| E | 4 | 0.250 | 0.500 | 0.625 |",
    ]
    assert pattern_markdown([]) == "_no test stays_"


def _write_fixture(root: Path, table: pd.DataFrame, fitted) -> None:
    models = root / "models" / TASK
    write_outputs(models, fitted[0], table, TASK, n_boot=20)
    write_outputs(models / "baselines" / "early_fusion", fitted[1], table, TASK, n_boot=20)
    write_outputs(models / "baselines" / "ehr_only",
                  moe.fit_baseline(table, TASK, "ehr_only", QUICK), table, TASK, n_boot=20)
    write_outputs(models / "baselines" / "medfuse",  # a peer: saved, loaded for its curves
                  moe.fit_baseline(table, TASK, "medfuse", QUICK), table, TASK, n_boot=20)
    write_outputs(models / "baselines" / "moe_single_expert",
                  fit_ablation(table, TASK, "moe_single_expert", QUICK), table, TASK, n_boot=20)
    table.to_parquet(root / "multimodal_dataset.parquet", index=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, toy, fitted) -> Path:
    """A $MOE_DATA_DIR in the assets' layout: mortality's MoE, two baselines, one ablation."""
    root = tmp_path_factory.mktemp("data")
    table, truth = toy
    _write_fixture(root, table, fitted)
    truth_path = root / "demo" / "truth.parquet"
    truth_path.parent.mkdir()
    truth[["stay_id", "p_mortality", "p_long_los", "p_readmission"]].to_parquet(truth_path)
    return root


NAMES = ["moe", "early_fusion", "ehr_only", "medfuse", "moe_single_expert"]


def test_build_report_writes_markdown_and_pngs(data_dir, toy):
    from moe.report import build_report

    table, truth = toy
    tmp_path = data_dir
    names = NAMES
    truth_path = tmp_path / "demo" / "truth.parquet"
    rep = build_report(tmp_path, tasks=("mortality", "long_los"), truth_path=truth_path,
                       cxr_weights="random (NOT pretrained — demo only)", n_boot=30,
                       fractions=(0.0, 0.5, 1.0))
    md = (tmp_path / "reports" / "report.md").read_text()
    assert md == rep.markdown
    assert list(rep.tasks) == ["mortality"]  # long_los has no model folder
    for name in [*names, "oracle"]:
        assert re.search(rf"^\| \**\*?{name}", md, re.M), name
    assert "randomly initialised DenseNet" in md
    curves = rep.tasks["mortality"].robustness  # the saved peer's curves, beside the MoE's
    assert {f"{k}: {m}" for k in ("moe", "early_fusion", "medfuse")
            for m in ("ehr", "notes", "cxr")} == set(curves)
    assert "medfuse: cxr" in md  # a column of the robustness table
    assert "paired" in md.lower() and "early_fusion" in md
    pngs = sorted(p.name for p in (tmp_path / "reports").glob("*.png"))
    assert {f"mortality_{k}.png" for k in ("roc", "calibration", "robustness", "gates",
                                            "subgroups")} <= set(pngs)
    for p in pngs:
        assert (tmp_path / "reports" / p).read_bytes()[:4] == b"\x89PNG"
        assert f"({p})" in md
    # no stay ids anywhere in the text
    ids = {str(s) for s in table["stay_id"]}
    assert not ids & set(re.findall(r"\d+", md))
    assert not re.search(r"\d{8}", md)
    head = rep.tasks["mortality"].headline
    orc = float(head.loc[head.model == "oracle", "auroc"].iloc[0])
    test = table[(table.split == "test") & table[TASK].notna()]
    p_true = truth.set_index("stay_id").loc[test.stay_id, "p_mortality"]
    assert orc == pytest.approx(auroc(test[TASK].astype(float), p_true))


def test_moe_report_asset_metadata(data_dir, toy):
    """The Dagster asset on the same folder: report.md written, metadata has the headline
    table and embedded figures, and only metrics/counts/paths (no ids)."""
    from dagster import materialize

    from assets.report import moe_report
    from plumbing.resources import ProjectResource

    res = materialize(
        [moe_report],
        resources={"project": ProjectResource(data_dir=str(data_dir))},
        run_config={"ops": {"moe_report": {"config": {"n_boot": 20, "fractions": [0.0, 1.0]}}}},
    )
    assert res.success
    meta = res.asset_materializations_for_node("moe_report")[0].metadata
    table_md = meta["mortality: test metrics"].value
    for name in [*NAMES, "oracle"]:
        assert name in table_md
    assert "data:image/png;base64," in meta["mortality: figures"].value
    assert 0.0 <= meta["mortality: moe AUROC"].value <= 1.0
    assert (data_dir / "reports" / "report.md").is_file()
    # no cxr_embeddings materialization on this instance: the report says where to look
    assert "see cxr_embeddings metadata" in (data_dir / "reports" / "report.md").read_text()
    text = " ".join(str(v.value) for k, v in meta.items() if k != "mortality: figures")
    assert not {str(s) for s in toy[0]["stay_id"]} & set(re.findall(r"\d+", text))
