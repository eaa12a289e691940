"""Public API: fit the MoE or a baseline on any table shaped like `multimodal_dataset`.

    import moe
    model = moe.fit(table, "mortality")                     # MoEConfig defaults
    model = moe.fit(table, "mortality", {"top_k": 1})       # or a MoEConfig / dict
    p = model.predict_proba(table)                          # one probability per row
    p_no_cxr = model.predict_proba(table, drop="cxr")       # hide a modality for every row
    w = model.gate_weights(table)                           # (rows, experts), model.expert_names
    model.save("out/"); moe.api.load("out/")                 # model.pt + config.json
    base = moe.fit_baseline(table, "mortality", "early_fusion")

`table`: pyarrow Table or pandas DataFrame with `split` ('train'|'val'|'test'), the task's
label column (nullable 0/1; null rows are ignored), `has_ehr/has_notes/has_cxr` and vector
columns `ehr/notes/cxr` (float lists of any fixed length, null where missing; a modality
column may be absent). Training uses `split == 'train'`, early stopping `split == 'val'`.

`evaluate` turns a fitted model into the files the assets write: predictions for every
labelled stay in every split, and metrics (test AUROC/AUPRC with bootstrap 95% intervals,
per split and per availability pattern).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moe import evaluation as ev
from moe.baselines import KINDS, FittedBaseline
from moe.baselines import fit_baseline as _fit_baseline
from moe.data import Table, extract, pattern_labels
from moe.metrics import summary
from moe.peers import PEER_KINDS
from moe.train import FittedMoE, MoEConfig, fit_moe
from plumbing.atomic import write_json_atomic, write_parquet_atomic

ABLATIONS: dict[str, dict[str, Any]] = {
    "moe_no_masking": {"availability_masking": False},
    "moe_no_dropout": {"modality_dropout": 0.0},
    "moe_single_expert": {"single_expert": True},
    "moe_no_ensemble": {"ensemble": 1},
    "moe_no_linear": {"linear_weight": 0.0},
}


def make_config(config: MoEConfig | dict[str, Any] | None = None, **overrides: Any) -> MoEConfig:
    if config is None:
        cfg = MoEConfig()
    elif isinstance(config, MoEConfig):
        cfg = config
    else:
        cfg = MoEConfig.from_dict(dict(config))
    return cfg.replace(**overrides) if overrides else cfg


def fit(table: Table, task: str, config: MoEConfig | dict[str, Any] | None = None) -> FittedMoE:
    """Train the availability-aware MoE for `task` (a label column of `table`)."""
    return fit_moe(table, task, make_config(config))


def fit_baseline(
    table: Table, task: str, kind: str, config: MoEConfig | dict[str, Any] | None = None
) -> FittedBaseline:
    """Train a baseline (`KINDS`) on the same splits; see `moe.baselines`."""
    return _fit_baseline(table, task, kind, make_config(config))


def fit_ablation(
    table: Table, task: str, name: str, config: MoEConfig | dict[str, Any] | None = None
) -> FittedMoE:
    """The MoE with one switch flipped: `moe_no_masking`, `moe_no_dropout`, `moe_single_expert`, `moe_no_ensemble`, `moe_no_linear`."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; expected one of {sorted(ABLATIONS)}")
    return fit_moe(table, task, make_config(config, **ABLATIONS[name]))


def load(directory: str | Path, device: str = "cpu") -> FittedMoE:
    return FittedMoE.load(directory, device=device)


def predictions(model: FittedMoE | FittedBaseline, table: Table, task: str) -> pd.DataFrame:
    """`stay_id, split, y_true, y_prob, pattern` for every stay with a label, all splits."""
    a = extract(table, task, dims=model.dims)
    assert a.y is not None
    keep = ~np.isnan(a.y)
    a = a.subset(np.flatnonzero(keep))
    p = model.predict_arrays(a)
    assert a.y is not None
    return pd.DataFrame(
        {
            "stay_id": a.stay_id,
            "split": a.split.astype(str),
            "y_true": a.y.astype(np.int8),
            "y_prob": p.astype(np.float64),
            "pattern": pattern_labels(a.mask),
        }
    )


def metrics_of(pred: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics from a `predictions` frame: per split (test with CIs), a threshold chosen on
    val (max F1) applied to test, and test metrics by availability pattern."""
    out: dict[str, Any] = {}
    thr = ev.val_threshold(pred)
    for split in ("train", "val", "test"):
        s = pred[pred.split == split]
        if len(s):
            out[split] = summary(s.y_true, s.y_prob, n_boot=n_boot if split == "test" else 0,
                                 seed=seed, threshold=thr)
    by_pattern = ev.pattern_table({"model": pred}).drop(columns=["model", "brier"])
    out["test_by_pattern"] = by_pattern.to_dict(orient="records")
    return out


def write_outputs(
    directory: str | Path, model: FittedMoE | FittedBaseline, table: Table, task: str,
    n_boot: int = 1000,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write `predictions.parquet` and `metrics.json` (and `model.pt` + `config.json` for the
    MoE and the peers) into `directory`, atomically per file. Returns (predictions, metrics)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pred = predictions(model, table, task)
    met = metrics_of(pred, n_boot=n_boot)
    met["kind"] = model.kind
    met["task"] = task
    met["history"] = _jsonable(model.history)
    if isinstance(model, FittedMoE) or model.kind in PEER_KINDS:
        model.save(d)
    write_parquet_atomic(pred[["stay_id", "split", "y_true", "y_prob"]], d / "predictions.parquet")
    write_json_atomic(_jsonable(met), d / "metrics.json", sort_keys=False)
    return pred, met


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


__all__ = ["ABLATIONS", "KINDS", "fit", "fit_ablation", "fit_baseline", "load", "predictions",
           "metrics_of", "write_outputs", "make_config"]
