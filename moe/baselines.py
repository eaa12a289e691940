"""Baselines on the same splits and vectors as the MoE.

- `ehr_only`, `notes_only`, `cxr_only`: an MLP on that modality's vector, trained and
  early-stopped on the train/val stays that have it. Stays lacking the modality get the
  train prevalence (a constant, so they add nothing to the ranking).
- `early_fusion`: one MLP on concat(standardised vectors, zero where missing, availability mask).
- `late_fusion`: mean of the unimodal models' probabilities over the modalities a stay has
  (train prevalence when it has none).
- `linear`: the MoE's linear expert alone (`moe.linear_expert`, `moe.model.LinearExpert`): a
  ridge-fitted linear logit over the same standardised, projected inputs, with one intercept
  per availability pattern.
- `gbm`: HistGradientBoosting on the concatenated vectors with missing modalities as NaN
  (HAIM's recipe); vectors longer than `pca_dim` are first reduced by a PCA fitted on the
  train stays that have that modality. The number of boosting iterations is chosen on val
  AUPRC.
- `fusemoe`, `flex_moe`, `medfuse`: published fusion methods re-implemented at the head level
  on the same vectors (`moe.peers`, whose docstrings say what each keeps and simplifies).
The neural baselines share the MoE's training loop and hyper-parameters (`MoEConfig`),
including its train-PCA input projection (`proj_dim`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.class_weight import compute_sample_weight
from torch import Tensor, nn

from moe.config import BASELINE_KINDS
from moe.data import MODALITIES, Arrays, Drop, Table, extract
from moe.lazy_model import resolve_device
from moe.metrics import auprc
from moe.model import LinearExpert, is_projected
from moe.peers import PEER_KINDS, PEERS, fit_peer
from moe.train import (
    MoEConfig,
    fit_input_transform,
    fit_linear,
    labelled_split,
    pos_weight_of,
    predict_module,
    resolve_proj_dim,
    seed_everything,
    torch_threads,
    train_module,
)
from plumbing.atomic import atomic_path, write_json_atomic

KINDS: tuple[str, ...] = BASELINE_KINDS
assert set(PEER_KINDS) <= set(KINDS), "moe.config.BASELINE_KINDS lacks a peer"


class InputMLP(nn.Module):
    """MLP on concat(standardised x[m] for m in mods, zero where missing) [+ mask]."""

    def __init__(self, dims: dict[str, int], mods: tuple[str, ...], with_mask: bool, cfg: MoEConfig):
        super().__init__()
        self.mods = mods
        self.with_mask = with_mask
        # the MoE's input projection too (cfg.proj_dim), so that a comparison with the MoE
        # measures the mixture, not the projection
        self.projected = {m: is_projected(dims[m], cfg.proj_dim) for m in mods}
        widths = {m: cfg.proj_dim if self.projected[m] else dims[m] for m in mods}
        d_in = sum(widths.values()) + (len(MODALITIES) if with_mask else 0)
        for m in mods:
            self.register_buffer(f"mean_{m}", torch.zeros(dims[m]))
            self.register_buffer(f"std_{m}", torch.ones(dims[m]))
            if self.projected[m]:
                self.register_buffer(f"proj_{m}", torch.eye(dims[m])[:, : cfg.proj_dim].clone())
        W = cfg.width
        self.net = nn.Sequential(
            nn.Linear(d_in, W), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(W, W), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(W, 1),
        )
        self.register_buffer("logit_offset", torch.zeros(()))

    def set_input_stats(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        for m in self.mods:
            getattr(self, f"mean_{m}").copy_(stats[m][0])
            getattr(self, f"std_{m}").copy_(stats[m][1])

    def set_projections(self, proj: dict[str, Tensor]) -> None:
        for m in self.mods:
            if self.projected[m]:
                getattr(self, f"proj_{m}").copy_(proj[m])

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        parts = []
        for m in self.mods:
            j = MODALITIES.index(m)
            z = (x[m] - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
            if self.projected[m]:
                z = z @ getattr(self, f"proj_{m}")
            parts.append(z * mask[:, j : j + 1].to(z.dtype))  # zero (= train mean) if missing
        if self.with_mask:
            parts.append(mask.to(parts[0].dtype if parts else torch.float32))
        logits = self.net(torch.cat(parts, dim=1)).squeeze(1) + self.logit_offset
        return {"logits": logits}


def _fit_linear(tr: Arrays, cfg: MoEConfig) -> tuple[LinearExpert, dict[str, Any]]:
    module = fit_linear(tr, cfg)
    return module, {"ridge_alpha": module.ridge_alpha}


def load_baseline(directory: str | Path, device: str = "cpu") -> FittedBaseline:
    """A peer saved by `FittedBaseline.save`."""
    d = Path(directory)
    meta = json.loads((d / "config.json").read_text())
    cfg = MoEConfig.from_dict({**meta["config"], "device": device})
    module = PEERS[meta["kind"]](meta["dims"], cfg)
    blob = torch.load(d / "model.pt", map_location=device, weights_only=True)
    module.load_state_dict(blob["state_dict"])
    module.to(resolve_device(device)).eval()
    return FittedBaseline(meta["kind"], meta["task"], meta["dims"], meta["prevalence"],
                          {"module": module, "config": cfg})


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


class FittedBaseline:
    """A trained baseline: `predict_proba(table, drop=None)` -> (n,) probabilities."""

    def __init__(self, kind: str, task: str, dims: dict[str, int], prevalence: float, parts: dict[str, Any]):
        self.kind = kind
        self.task = task
        self.dims = dims
        self.prevalence = prevalence
        self.parts = parts
        self.history: dict[str, Any] = parts.get("history", {})

    def predict_proba(self, table: Table, drop: Drop = None) -> np.ndarray:
        return self.predict_arrays(extract(table, None, dims=self.dims, drop=drop))

    def predict_arrays(self, a: Arrays) -> np.ndarray:
        if self.kind in ("ehr_only", "notes_only", "cxr_only"):
            return self._unimodal(self.kind.removesuffix("_only"), a)
        if self.kind in ("early_fusion", "linear") or self.kind in PEER_KINDS:
            module = self.parts["module"]
            return _sigmoid(predict_module(module, a, next(module.parameters()).device))
        if self.kind == "late_fusion":
            probs = np.stack([self._unimodal(m, a) for m in MODALITIES], axis=1)
            n_have = a.mask.sum(axis=1)
            mean = (probs * a.mask).sum(axis=1) / np.maximum(n_have, 1)
            return np.where(n_have > 0, mean, self.prevalence)
        if self.kind == "gbm":
            return self.parts["gbm"].predict_proba(self.parts["features"](a))[:, 1]
        raise ValueError(self.kind)

    def save(self, directory: str | Path) -> None:
        """`model.pt` + `config.json` for a peer (`PEER_KINDS`), so the report can compute its
        robustness curves without refitting; `load_baseline` reads them back."""
        if self.kind not in PEER_KINDS:
            raise ValueError(f"only the peers {PEER_KINDS} are saved, not {self.kind!r}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu() for k, v in self.parts["module"].state_dict().items()}
        with atomic_path(d / "model.pt") as tmp:
            torch.save({"state_dict": state}, tmp)
        meta = {"kind": self.kind, "task": self.task, "dims": self.dims,
                "prevalence": self.prevalence, "config": self.parts["config"].to_dict()}
        write_json_atomic(meta, d / "config.json", sort_keys=False, default=str)

    def _unimodal(self, m: str, a: Arrays) -> np.ndarray:
        module = self.parts[m]
        j = MODALITIES.index(m)
        p = np.full(len(a), self.prevalence, float)
        if module is not None and a.mask[:, j].any():
            sub = a.subset(np.flatnonzero(a.mask[:, j]))
            p[a.mask[:, j]] = _sigmoid(predict_module(module, sub, next(module.parameters()).device))
        return p


def _fit_mlp(tr: Arrays, va: Arrays, mods: tuple[str, ...], with_mask: bool, cfg: MoEConfig):
    module = InputMLP(tr.dims(), mods, with_mask, cfg)
    fit_input_transform(module, tr, cfg.proj_dim)
    module, hist = train_module(module, tr, va, cfg, modality_drop=0.0)
    if cfg.prior_correction:
        assert tr.y is not None
        module.logit_offset.fill_(-math.log(pos_weight_of(tr.y, cfg.class_weight)))  # type: ignore[operator]
    return module, hist


def _fit_unimodal(tr: Arrays, va: Arrays, m: str, cfg: MoEConfig):
    j = MODALITIES.index(m)
    tr_m = tr.subset(np.flatnonzero(tr.mask[:, j]))
    va_m = va.subset(np.flatnonzero(va.mask[:, j]))
    assert tr_m.y is not None
    if len(tr_m) == 0 or len(np.unique(tr_m.y)) < 2:
        return None, {"skipped": f"no usable train rows with {m}"}
    return _fit_mlp(tr_m, va_m, (m,), False, cfg)


class GbmFeatures:
    """The GBM's input: PCA-reduced vectors, NaN where a modality is missing, as bin codes.

    HistGradientBoosting bins its inputs itself, but given sample weights (our balanced class
    weights) sklearn >= 1.6 places the bin edges at weighted percentiles with one Python call
    per edge per column: 18.8 s of a 21.9 s fit on 3,500 x 96 (cProfile). Here the same edges
    come from one sort per column (`weighted_quantiles`), and the GBM gets each value's bin
    index: with <= 255 distinct values a column takes sklearn's fast path (split between
    distinct values), so the trees are those sklearn would grow on the raw vectors (tested).
    """

    def __init__(
        self,
        a: Arrays,
        weights: np.ndarray | None = None,
        pca_dim: int = 32,
        n_bins: int = 255,
        seed: int = 0,
    ):
        self.pcas: dict[str, PCA | None] = {}
        for j, m in enumerate(MODALITIES):
            rows = a.x[m][a.mask[:, j]]
            if a.x[m].shape[1] > pca_dim and len(rows) > pca_dim:
                self.pcas[m] = PCA(n_components=pca_dim, random_state=seed).fit(rows)
            else:
                self.pcas[m] = None
        levels = np.linspace(0, 100, n_bins + 1)[1:-1]  # n_bins - 1 edges -> <= n_bins codes
        w = np.ones(len(a)) if weights is None else np.asarray(weights, np.float64)
        self.edges = [
            _bin_edges(col[~np.isnan(col)], w[~np.isnan(col)], levels)
            for col in self.vectors(a).T
        ]

    def vectors(self, a: Arrays) -> np.ndarray:
        cols = []
        for j, m in enumerate(MODALITIES):
            v = a.x[m].astype(np.float64)
            pca = self.pcas[m]
            if pca is not None:
                v = pca.transform(v)
            v = v.copy()
            v[~a.mask[:, j]] = np.nan
            cols.append(v)
        return np.concatenate(cols, axis=1)

    def __call__(self, a: Arrays) -> np.ndarray:
        X = self.vectors(a)
        codes = np.empty_like(X)
        for j, edges in enumerate(self.edges):
            codes[:, j] = np.searchsorted(edges, X[:, j], side="left")  # x <= edge: lower bin
        codes[np.isnan(X)] = np.nan
        return codes


def _bin_edges(v: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Bin edges of one column as sklearn's HistGradientBoosting places them: midpoints
    between its distinct values when there are few, else its weighted quantiles."""
    distinct = np.unique(v)
    if len(distinct) <= len(levels) + 1:
        return (distinct[:-1] + distinct[1:]) / 2
    return np.unique(weighted_quantiles(v, w, levels))


def weighted_quantiles(v: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Weighted "averaged inverted CDF" quantiles of `v` at `levels` (percent), all from one
    sort: with unit weights, numpy's `method="averaged_inverted_cdf"`. At a level that falls
    exactly on a step of the weighted CDF, the mean of that value and the next."""
    order = np.argsort(v)
    v, cdf = v[order], np.cumsum(w[order])
    target = levels / 100 * cdf[-1]
    last = len(v) - 1
    at = np.clip(np.searchsorted(cdf, target), 0, last)
    on_step = cdf[at] - target <= np.finfo(np.float64).eps
    return np.where(on_step, (v[at] + v[np.clip(at + 1, 0, last)]) / 2, v[at])


def _fit_gbm(tr: Arrays, va: Arrays, cfg: MoEConfig, max_iter: int = 300):
    cw = "balanced" if cfg.class_weight == "balanced" else None
    assert tr.y is not None and va.y is not None
    weights = compute_sample_weight(cw, tr.y) if cw else None  # as the GBM will weight rows
    features = GbmFeatures(tr, weights, seed=cfg.seed)
    X_tr, X_va = features(tr), features(va)
    params = dict(learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0,
                  early_stopping=False, random_state=cfg.seed, class_weight=cw)
    gbm = HistGradientBoostingClassifier(max_iter=max_iter, **params)  # type: ignore[arg-type]
    gbm.fit(X_tr, tr.y)
    best_iter, scores = max_iter, []
    if len(va) and len(np.unique(va.y)) == 2:
        scores = [auprc(va.y, p[:, 1]) for p in gbm.staged_predict_proba(X_va)]
        best_iter = int(np.argmax(scores)) + 1
    # boosting without subsampling or early stopping is deterministic, so the first best_iter
    # trees are the model a refit with max_iter=best_iter would build: truncate, not refit
    model: Any = _FirstTrees(gbm, best_iter) if best_iter < max_iter else gbm
    offset = math.log(pos_weight_of(tr.y, "balanced")) if cw == "balanced" else 0.0
    # undo the class weighting's shift of the odds, as for the MLPs
    history = {"best_iter": best_iter, "val_auprc": scores[best_iter - 1] if scores else None}
    return _PriorCorrected(model, offset), features, history


class _FirstTrees:
    """A fitted boosting model's decision function from its first `n` iterations only."""

    def __init__(self, model: Any, n: int):
        self.model, self.n = model, n

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        for i, z in enumerate(self.model.staged_decision_function(X), start=1):
            if i == self.n:
                return np.asarray(z)
        raise ValueError(f"the model has fewer than {self.n} iterations")


class _PriorCorrected:
    def __init__(self, model: Any, offset: float):
        self.model, self.offset = model, offset

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.model.decision_function(X) - self.offset
        p = _sigmoid(np.asarray(z))
        return np.stack([1 - p, p], axis=1)


def fit_baseline(
    table: Table | Arrays, task: str, kind: str, config: MoEConfig | None = None
) -> FittedBaseline:
    if kind not in KINDS:
        raise ValueError(f"unknown baseline kind {kind!r}; expected one of {KINDS}")
    cfg = config or MoEConfig()
    a = table if isinstance(table, Arrays) else extract(table, task)
    tr, va = labelled_split(a, "train"), labelled_split(a, "val")
    assert tr.y is not None
    if len(tr) == 0:
        raise ValueError(f"no labelled rows with split == 'train' for task {task!r}")
    prevalence = float(np.mean(tr.y))
    parts: dict[str, Any] = {}
    proj_choice = None
    if kind != "gbm":  # one input projection for the MoE and the neural baselines
        cfg, proj_choice = resolve_proj_dim(tr, cfg)
    with torch_threads(cfg.threads):
        seed_everything(cfg.seed)
        if kind in ("ehr_only", "notes_only", "cxr_only"):
            m = kind.removesuffix("_only")
            parts[m], parts["history"] = _fit_unimodal(tr, va, m, cfg)
        elif kind == "late_fusion":
            parts["history"] = {}
            for m in MODALITIES:
                parts[m], parts["history"][m] = _fit_unimodal(tr, va, m, cfg)
        elif kind == "early_fusion":
            parts["module"], parts["history"] = _fit_mlp(tr, va, MODALITIES, True, cfg)
        elif kind == "linear":
            parts["module"], parts["history"] = _fit_linear(tr, cfg)
        elif kind in PEER_KINDS:
            parts["module"], parts["history"] = fit_peer(PEERS[kind], tr, va, cfg)
            parts["config"] = cfg
        else:
            parts["gbm"], parts["features"], parts["history"] = _fit_gbm(tr, va, cfg)
    if proj_choice is not None:
        parts["history"] = {**parts["history"], "proj_dim": proj_choice}
    return FittedBaseline(kind, task, a.dims(), prevalence, parts)
