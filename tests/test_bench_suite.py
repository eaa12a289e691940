"""Smoke test of `python -m bench.suite --quick`: it runs end to end on tiny draws and its last
line is the JSON summary with the keys issue 13 asks for. Numbers at this size mean nothing;
it checks that the suite runs and that its summary is consistent, not how good a model is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.suite import summarise, targets

REPO = Path(__file__).resolve().parent.parent


def test_suite_quick_prints_the_table_and_the_json_summary(tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--small-dims", "--seeds", "0",
         "--families", "homogeneous,availability_shift",
         "--models", "moe,early_fusion,ehr_only", "--n-boot", "50",
         "--config", '{"max_epochs": 3, "ensemble": 1, "threads": 1}',
         "--records", str(records)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    s = json.loads(lines[-1])
    assert set(s["families"]) == {"homogeneous", "availability_shift"}
    for cell in s["families"].values():
        assert set(cell) == {"oracle", "moe", "early_fusion", "ehr_only"}
        assert all(0.0 <= v <= 1.0 for v in cell.values())
    means = {m: np.mean([c[m] for c in s["families"].values()]) for m in ("moe", "early_fusion",
                                                                           "ehr_only")}
    best = max(("early_fusion", "ehr_only"), key=lambda m: means[m])
    assert s["best_competitor"] == best
    assert np.isclose(s["moe_minus_best"], means["moe"] - means[best], atol=1e-4)
    gaps = [c["oracle"] - c["moe"] for c in s["families"].values()]
    assert np.isclose(s["worst_oracle_gap"], max(gaps), atol=1e-4)
    shift = s["shift"]["availability_shift"]
    assert {"oracle_id", "moe", "early_fusion"} <= set(shift)
    assert np.isclose(shift["moe"]["drop"], shift["moe"]["auroc_id"]
                      - s["families"]["availability_shift"]["moe"], atol=1e-4)
    table = "\n".join(lines)
    assert "| oracle |" in table and "| early_fusion |" in table and "[+" in table
    assert s["config"] == {"max_epochs": 3, "ensemble": 1, "threads": 1}
    recs = json.loads(records.read_text())
    assert len(recs) == 2
    assert recs[0]["models"]["early_fusion"]["vs_moe"]["verdict"] in {"better", "worse", "tie"}


def _rec(family: str, seed: int, aurocs: dict[str, float], verdict: str = "tie") -> dict:
    return {"family": family, "seed": seed, "oracle": 0.9,
            "models": {m: {"auroc": v, "ece": 0.01, "seconds": 1.0,
                           **({"vs_moe": {"verdict": verdict}} if m != "moe" else {})}
                       for m, v in aurocs.items()}}


def test_summary_arithmetic_on_known_records() -> None:
    recs = [
        _rec("a", 0, {"moe": 0.80, "x": 0.78, "y": 0.70}),
        _rec("a", 1, {"moe": 0.82, "x": 0.80, "y": 0.72}, verdict="worse"),
        _rec("b", 0, {"moe": 0.70, "x": 0.74, "y": 0.60}, verdict="better"),
    ]
    s = summarise(recs, ["moe", "x", "y"])
    assert s["families"]["a"] == {"oracle": 0.9, "moe": 0.81, "x": 0.79, "y": 0.71}
    assert s["best_competitor"] == "x"
    # average over families: moe (0.81 + 0.70) / 2, x (0.79 + 0.74) / 2
    assert np.isclose(s["moe_minus_best"], 0.755 - 0.765)
    assert np.isclose(s["moe_minus_best_per_family"]["b"], -0.04)
    assert np.isclose(s["worst_oracle_gap"], 0.2)
    assert s["verdicts"]["a"]["x"] == {"better": 0, "worse": 1, "tie": 1}
    assert ["b", 0, "x"] in s["competitor_better_beyond_noise"]
    assert ["b", 0, "y"] in s["competitor_better_beyond_noise"]


def test_shift_target_is_held_against_early_fusion_and_the_peers_only() -> None:
    models = ["moe", "cxr_only", "early_fusion", "fusemoe"]
    summary = {"families": {}, "shift": {"availability_shift": {
        "moe": {"drop": -0.009}, "cxr_only": {"drop": -0.084},
        "early_fusion": {"drop": -0.006}, "fusemoe": {"drop": 0.001}}}}
    line = [t for t in targets({**summary, "moe_minus_best_per_family": {"f": 0.0},
                                "competitor_better_beyond_noise": [], "moe_minus_best": 0.0,
                                "best_competitor": "x", "worst_oracle_gap": 0.0,
                                "worst_moe_ece": 0.0}, models) if "drop" in t]
    assert len(line) == 1 and "(early_fusion)" in line[0] and line[0].endswith("(met)")
    summary["shift"]["availability_shift"]["fusemoe"]["drop"] = -0.02
    line = [t for t in targets({**summary, "moe_minus_best_per_family": {"f": 0.0},
                                "competitor_better_beyond_noise": [], "moe_minus_best": 0.0,
                                "best_competitor": "x", "worst_oracle_gap": 0.0,
                                "worst_moe_ece": 0.0}, models) if "drop" in t]
    assert "(fusemoe)" in line[0] and line[0].endswith("(missed)")


def test_fit_time_reports_seconds_for_each_family() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fit_time", "--rows", "600", "--families", "small_data"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rows"] == 600 and set(out["seconds"]) == {"small_data"}
    assert out["seconds"]["small_data"] > 0
