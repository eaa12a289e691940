"""Training loop shared by the MoE and the neural baselines, and the fitted MoE object.

A module here is any `nn.Module` whose `forward(x: dict[str, Tensor], mask: Tensor)` returns
`{"logits": (n,), "balance": scalar?}`. Training: BCE with `pos_weight = n_neg / n_pos`
(`class_weight="balanced"`), plus `balance_weight * balance`; AdamW; mini-batches drawn with a
seeded generator; modality dropout (hide each available modality of a training row with
probability p, always keeping at least one); early stopping on validation AUPRC with
`patience` epochs, restoring the best epoch's weights. With `prior_correction`, the logits get
`-log(pos_weight)` at inference, which undoes the class weighting's shift of the odds so
probabilities stay calibrated (rankings are unaffected).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from moe.config import TRAIN_FIELDS, TrainConfig
from moe.data import MODALITIES, Arrays, Drop, Table, extract
from moe.lazy_model import resolve_device
from moe.metrics import auprc
from moe.model import (
    MODEL_FIELDS,
    LinearExpert,
    ModalityEncoder,
    ModelConfig,
    MoE,
    MoEEnsemble,
    is_projected,
)
from plumbing.atomic import atomic_path, write_json_atomic


class MoEConfig:
    """Everything `moe.fit` needs: `model` (architecture, `moe.model.ModelConfig`), `train`
    (`TrainConfig`) and `extra` (free-form notes, saved as-is).

    Flat on the outside, as users and the launchpad write settings: `MoEConfig(top_k=1,
    lr=3e-4)` and `MoEConfig.from_dict({...})` send each key to the part that owns it,
    `cfg.top_k` reads it from there, `cfg.replace(seed=1)` returns a copy with keys changed,
    `to_dict()` is the flat dict (config.json). `from_dict` also accepts the nested form
    `{"model": {...}, "train": {...}, "extra": {...}}`."""

    __slots__ = ("extra", "model", "train")

    def __init__(self, model: ModelConfig | None = None, train: TrainConfig | None = None,
                 extra: dict[str, Any] | None = None, **flat: Any) -> None:
        unknown = set(flat) - MODEL_FIELDS - TRAIN_FIELDS
        if unknown:
            raise ValueError(f"unknown MoEConfig fields: {sorted(unknown)}")
        m = {k: v for k, v in flat.items() if k in MODEL_FIELDS}
        t = {k: v for k, v in flat.items() if k in TRAIN_FIELDS}
        self.model = dc_replace(model or ModelConfig(), **m)
        self.train = dc_replace(train or TrainConfig(), **t)
        self.extra = dict(extra or {})

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: the parts' fields, read flat
        if name in MODEL_FIELDS:
            return getattr(object.__getattribute__(self, "model"), name)
        if name in TRAIN_FIELDS:
            return getattr(object.__getattribute__(self, "train"), name)
        raise AttributeError(f"MoEConfig has no setting {name!r}")

    def replace(self, **flat: Any) -> MoEConfig:
        extra = flat.pop("extra", self.extra)
        return MoEConfig(self.model, self.train, extra, **flat)

    def expert_subsets(self) -> list[tuple[str, ...]]:
        return self.model.expert_subsets()

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), **asdict(self.train), "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MoEConfig:
        d = dict(d)
        model = d.pop("model", None)
        train = d.pop("train", None)
        extra = d.pop("extra", None)
        nested = {**(model or {}), **(train or {})}
        return cls(extra=extra, **nested, **d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MoEConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"MoEConfig(model={self.model!r}, train={self.train!r}, extra={self.extra!r})"


AnyTrainConfig = TrainConfig | MoEConfig


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


def to_tensors(a: Arrays, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    x = {m: torch.from_numpy(np.ascontiguousarray(a.x[m])).to(device) for m in MODALITIES}
    return x, torch.from_numpy(a.mask).to(device)


def input_stats(a: Arrays) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-modality mean/std over the rows that have the modality (std floored at 1e-3)."""
    out = {}
    for j, m in enumerate(MODALITIES):
        v = a.x[m][a.mask[:, j]]
        if len(v) == 0:
            mean = np.zeros(a.x[m].shape[1], np.float32)
            std = np.ones(a.x[m].shape[1], np.float32)
        else:
            mean = v.mean(axis=0)
            std = np.maximum(v.std(axis=0), 1e-3)
        out[m] = (torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32)))
    return out


_PCA_CACHE: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
_PCA_CACHE_MAX = 32


def content_key(*arrays: np.ndarray) -> str:
    """A digest of the arrays' dtypes, shapes and bytes: the key of the memos below, which
    the MoE, its ablations and the neural baselines of one task hit with the same rows."""
    h = hashlib.blake2b(digest_size=16)
    for v in arrays:
        v = np.ascontiguousarray(v)
        h.update(f"{v.dtype}{v.shape}".encode())
        h.update(v.data)
    return h.hexdigest()


def top_principal_directions(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(variances (k,), directions (d, k)) of the top `k` principal components of the rows of
    `v` (scikit-learn's PCA: exact solver, sample covariance with ddof 1, largest first, each
    direction's sign fixed so its largest-magnitude entry is positive). With fewer than `k`
    rows, the missing directions are zero.

    Memoised on the matrix's content: the MoE, its ablations and the neural baselines of
    one task all project the same train rows, and the decomposition of a 1024-wide
    covariance was the largest single cost of fitting them (profile of the baselines asset).
    """
    from sklearn.decomposition import PCA

    v = np.ascontiguousarray(v)
    key = (content_key(v), k)
    hit = _PCA_CACHE.get(key)
    if hit is not None:
        return hit[0].copy(), hit[1].copy()
    n, d = v.shape
    k_fit = min(k, n, d)
    # exact solvers only ("auto" may pick the randomized one): the covariance's
    # eigendecomposition when rows outnumber columns, else the SVD of the rows
    pca = PCA(n_components=k_fit, svd_solver="covariance_eigh" if n > d else "full").fit(v)
    val = np.zeros(k)
    vec = np.zeros((d, k))
    val[:k_fit] = pca.explained_variance_
    vec[:, :k_fit] = pca.components_.T
    if len(_PCA_CACHE) >= _PCA_CACHE_MAX:
        _PCA_CACHE.pop(next(iter(_PCA_CACHE)))
    _PCA_CACHE[key] = (val.copy(), vec.copy())
    return val, vec


def pca_projections(
    a: Arrays, stats: dict[str, tuple[Tensor, Tensor]], k: int
) -> dict[str, Tensor]:
    """Per modality wider than k: (d, k) top-k principal directions of the standardised
    vectors of the rows that have it, scaled so the projected features have mean variance 1."""
    out = {}
    for j, m in enumerate(MODALITIES):
        d = a.x[m].shape[1]
        if not is_projected(d, k):
            continue
        mean, std = (t.double().numpy() for t in stats[m])
        v = (a.x[m][a.mask[:, j]].astype(np.float64) - mean) / std
        if len(v) < 2:
            out[m] = torch.eye(d)[:, :k].clone()
            continue
        val, vec = top_principal_directions(v, k)
        scale = np.sqrt(max(val.mean(), 1e-8))
        out[m] = torch.from_numpy((vec / scale).astype(np.float32))
    return out


def fit_input_transform(module: Any, tr: Arrays, proj_dim: int) -> None:
    """Load a module's input standardisation (and, with proj_dim > 0, its PCA projection)
    from the train rows: the MoE and the neural baselines see their inputs the same way."""
    stats = input_stats(tr)
    module.set_input_stats(stats)
    if proj_dim > 0:
        module.set_projections(pca_projections(tr, stats, proj_dim))


def modality_dropout(mask: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Hide each present modality with probability p, keeping at least one per row."""
    if p <= 0:
        return mask
    hide = (torch.rand(mask.shape, generator=gen, device=mask.device) < p) & mask
    kept = mask & ~hide
    empty = ~kept.any(dim=1)
    return torch.where(empty.unsqueeze(1), mask, kept)


def pos_weight_of(y: np.ndarray, class_weight: str) -> float:
    n_pos = float((y == 1).sum())
    n_neg = float((y == 0).sum())
    if class_weight == "none" or n_pos == 0 or n_neg == 0:
        return 1.0
    return n_neg / n_pos


M = TypeVar("M", bound=nn.Module)


@torch.no_grad()
def predict_module(
    module: nn.Module, a: Arrays, device: torch.device, batch: int = 8192, key: str = "logits"
) -> np.ndarray:
    return predict_outputs(module, a, device, (key,), batch)[key]


@torch.no_grad()
def predict_outputs(
    module: nn.Module, a: Arrays, device: torch.device, keys: tuple[str, ...],
    batch: int = 8192,
) -> dict[str, np.ndarray]:
    """The module's outputs `keys` for every row of `a`, from one forward pass per batch."""
    module.eval()
    x, mask = to_tensors(a, device)
    outs: dict[str, list[Tensor]] = {k: [] for k in keys}
    for s in range(0, len(a), batch):
        sl = slice(s, s + batch)
        out = module({m: v[sl] for m, v in x.items()}, mask[sl])
        for k in keys:
            outs[k].append(out[k].float().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros((0,), np.float32) for k, v in outs.items()}


class _WeightAverage:
    """Exponential moving average of a module's floating-point state (Polyak averaging)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.state[k].copy_(v)


def train_module(
    module: M,
    tr: Arrays,
    va: Arrays,
    cfg: AnyTrainConfig,
    modality_drop: float = 0.0,
) -> tuple[M, dict[str, Any]]:
    """Fit `module` on labelled rows of `tr`, early-stopping on `va`. Returns the module at
    its best validation epoch (in eval mode) and a history dict."""
    device = torch.device(resolve_device(cfg.device))
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    module.to(device)
    assert tr.y is not None
    y_np = tr.y.astype(np.float32)
    pw = pos_weight_of(y_np, cfg.class_weight)
    x_tr, m_tr = to_tensors(tr, device)
    y_tr = torch.from_numpy(y_np).to(device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw, device=device))
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    has_val = va.y is not None and len(va) > 0 and (va.y == 1).any() and (va.y == 0).any()
    best_score, best_state, best_epoch, bad = -math.inf, None, -1, 0
    hist: dict[str, Any] = {"val_auprc": [], "train_loss": [], "pos_weight": pw}
    t0 = time.perf_counter()
    n = len(tr)
    ema = _WeightAverage(module, cfg.ema) if cfg.ema > 0 else None
    for epoch in range(cfg.max_epochs):
        module.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size].to(device)
            mask_b = m_tr[idx]
            if modality_drop > 0:
                mask_b = modality_dropout(mask_b.cpu(), modality_drop, gen).to(device)
            out = module({m: v[idx] for m, v in x_tr.items()}, mask_b)
            loss = loss_fn(out["logits"], y_tr[idx])
            if "balance" in out and cfg.balance_weight > 0:
                loss = loss + cfg.balance_weight * out["balance"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(module)
            total += float(loss.detach()) * len(idx)
        hist["train_loss"].append(total / max(n, 1))
        live = None
        if ema is not None:  # validate (and keep) the averaged weights
            live = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.load_state_dict(ema.state)
        if has_val:
            assert va.y is not None
            score = auprc(va.y, predict_module(module, va, device))
        else:  # no usable validation set: keep the last epoch
            score = float(epoch)
        hist["val_auprc"].append(score if has_val else None)
        if score > best_score:
            best_score, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
        if live is not None:
            module.load_state_dict(live)
        if bad >= cfg.patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    hist.update(
        best_epoch=best_epoch,
        epochs_run=len(hist["train_loss"]),
        best_val_auprc=best_score if has_val else None,
        seconds=time.perf_counter() - t0,
    )
    return module, hist


def labelled_split(a: Arrays, split: str) -> Arrays:
    assert a.y is not None
    return a.subset(np.flatnonzero((a.split == split) & ~np.isnan(a.y)))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


IDENTITY = (1.0, 0.0)


def platt_scaling(logits: np.ndarray, y: np.ndarray, min_per_class: int = 10) -> tuple[float, float]:
    """(a, b) of the logistic fit P(y=1) = sigmoid(a * logit + b) (Platt, 1999), unpenalised.

    Why: early stopping on AUPRC, class weighting and seed averaging leave the MoE's ranking
    good but its probabilities a little over- or under-confident; two numbers fitted on the
    validation stays fix that without touching the ranking. Identity when either class has
    fewer than `min_per_class` rows, or when the fit would not keep the order (a <= 0)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=float)
    if min((y == 1).sum(), (y == 0).sum()) < min_per_class:
        return IDENTITY
    lr = LogisticRegression(C=1e12, max_iter=1000).fit(np.asarray(logits, float)[:, None], y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    return (a, b) if a > 0 and math.isfinite(a) and math.isfinite(b) else IDENTITY


class FittedMoE:
    """A trained MoE for one task. `predict_proba(table, drop=None)` -> (n,) probabilities;
    `gate_weights(table)` -> (n, n_experts) routing weights (columns `expert_names`).
    `calibration` (a, b): probabilities are sigmoid(a * logit + b) (`platt_scaling`)."""

    kind = "moe"

    def __init__(
        self, module: MoE | MoEEnsemble, task: str, config: MoEConfig, history: dict | None = None,
        calibration: tuple[float, float] = IDENTITY,
    ):
        self.module = module
        self.task = task
        self.config = config
        self.history = history or {}
        self.calibration = (float(calibration[0]), float(calibration[1]))

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.module.dims)

    @property
    def expert_names(self) -> list[str]:
        return list(self.module.expert_names)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def arrays(self, table: Table, drop: Drop = None) -> Arrays:
        return extract(table, None, dims=self.dims, drop=drop)

    def predict_arrays(self, a: Arrays) -> np.ndarray:
        scale, bias = self.calibration
        z = scale * predict_module(self.module, a, self.device).astype(np.float64) + bias
        return 1.0 / (1.0 + np.exp(-z))

    def predict_proba(self, table: Table, drop: Drop = None) -> np.ndarray:
        """One probability per row. `drop`: modality name(s) to hide for every row, or
        {modality: bool row mask}; rows with `has_<mod>` false or a null vector are treated
        as lacking that modality anyway."""
        return self.predict_arrays(self.arrays(table, drop))

    def gate_weights(self, table: Table, drop: Drop = None) -> np.ndarray:
        return predict_module(self.module, self.arrays(table, drop), self.device, key="weights")

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu() for k, v in self.module.state_dict().items()}
        with atomic_path(d / "model.pt") as tmp:
            torch.save({"state_dict": state}, tmp)
        meta = {
            "kind": self.kind,
            "task": self.task,
            "dims": self.dims,
            "expert_names": self.expert_names,
            "config": self.config.to_dict(),
            "calibration": list(self.calibration),
            "history": self.history,
        }
        write_json_atomic(meta, d / "config.json", sort_keys=False, default=str)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> FittedMoE:
        d = Path(directory)
        meta = json.loads((d / "config.json").read_text())
        cfg = MoEConfig.from_dict({**meta["config"], "device": device})
        module = build_module(meta["dims"], cfg)
        blob = torch.load(d / "model.pt", map_location=device, weights_only=True)
        state = blob["state_dict"]
        if isinstance(module, MoEEnsemble) and "linear_weight" not in state:
            state["linear_weight"] = module.linear_weight.clone()  # saved before it was chosen
        module.load_state_dict(state)
        module.to(torch.device(resolve_device(device))).eval()
        calibration = tuple(meta.get("calibration", IDENTITY))  # older saves: none
        return cls(module, meta["task"], cfg, meta.get("history"), (calibration[0], calibration[1]))


def fit_moe(table: Table | Arrays, task: str, config: MoEConfig | None = None) -> FittedMoE:
    cfg = config or MoEConfig()
    a = table if isinstance(table, Arrays) else extract(table, task)
    tr, va = labelled_split(a, "train"), labelled_split(a, "val")
    if len(tr) == 0:
        raise ValueError(f"no labelled rows with split == 'train' for task {task!r}")
    assert tr.y is not None
    with torch_threads(cfg.threads):
        module: MoE | MoEEnsemble
        first: tuple[MoE, dict[str, Any]] | None = None
        cfg, proj_choice = resolve_proj_dim(tr, cfg)
        if cfg.proj_dim_choice == "validation":
            cfg, first, proj_choice = choose_proj_dim(a.dims(), tr, va, cfg)
        if _single_moe(cfg):
            module, hist = first or _fit_one(a.dims(), tr, va, cfg)
        else:
            members, hists = [], []
            for i in range(cfg.ensemble):
                m, h = (first if i == 0 and first is not None
                        else _fit_one(a.dims(), tr, va, cfg.replace(seed=cfg.seed + i)))
                members.append(m)
                hists.append(h)
            hist = {
                "members": hists,
                "epochs_run": sum(h["epochs_run"] for h in hists),
                "seconds": sum(h["seconds"] for h in hists),
            }
            linear = None
            if cfg.linear_weight > 0:
                t0 = time.perf_counter()
                linear = fit_linear(tr, cfg)
                # only the total `seconds` holds wall-clock time: the rest of the history is
                # the same for the same data and seeds (tests/test_faults.py compares it)
                hist["linear"] = {"ridge_alpha": linear.ridge_alpha}
                hist["seconds"] += time.perf_counter() - t0
            module = MoEEnsemble(members, linear, cfg.linear_weight).eval()
            if linear is not None and cfg.linear_weight_choice == "validation":
                w, losses = choose_linear_weight(module, va)
                module.linear_weight.fill_(w)
                hist["linear"].update(weight=w, val_log_loss=losses)
        if proj_choice is not None:
            hist["proj_dim"] = proj_choice
        calibration = IDENTITY
        if cfg.calibration == "platt" and va.y is not None and len(va):
            device = next(module.parameters()).device
            calibration = platt_scaling(predict_module(module, va, device), va.y)
    return FittedMoE(module, task, cfg, hist, calibration)


LINEAR_WEIGHT_GRID = tuple(i / 8 for i in range(9))  # 0, 0.125, ..., 1


def _val_decides(va: Arrays) -> bool:
    """Whether the validation stays can decide a choice: labels, and 10 or more of each
    class (what `platt_scaling` needs to fit)."""
    return va.y is not None and min((va.y == 1).sum(), (va.y == 0).sum()) >= 10


def _first_least(losses: dict[str, float], tol: float) -> str:
    """The first key whose loss is within `tol` of the least (ties: the earlier candidate)."""
    least = min(losses.values())
    return next(k for k in losses if losses[k] <= least + tol)


def platt_log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Log-loss of the logits `z` after Platt scaling on the same rows (how well they rank
    and separate, whatever their scale): the score of the fit's validation choices."""
    z, y = z.astype(np.float64), y.astype(np.float64)
    a, b = platt_scaling(z, y)
    p = np.clip(1 / (1 + np.exp(-(a * z + b))), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_proj_dim(
    dims: dict[str, int], tr: Arrays, va: Arrays, cfg: MoEConfig
) -> tuple[MoEConfig, tuple[MoE, dict[str, Any]] | None, dict[str, Any] | None]:
    """(`cfg` with the chosen `proj_dim`, the first member fitted at it, the choice for the
    history): the first member (seed `cfg.seed`) fitted once per width in
    `proj_dim_candidates`, scored by `platt_log_loss` on the validation stays (ties: the
    earlier candidate). `cfg` unchanged, and nothing fitted, when the validation stays
    cannot decide (no labels, or under 10 of a class).

    Why: the width that suits the suite families (16: their signal lives in a few
    directions) cost a notes-driven task 0.014 validation AUROC on the project's generator
    against 64 (bench/VAL_SWEEP.txt step 8); real embeddings may differ again."""
    if not _val_decides(va):
        return cfg, None, None
    assert va.y is not None
    device = torch.device(resolve_device(cfg.device))
    fits: dict[int, tuple[MoE, dict[str, Any]]] = {}
    losses: dict[str, float] = {}
    for p in dict.fromkeys(cfg.proj_dim_candidates):
        m, h = _fit_one(dims, tr, va, cfg.replace(proj_dim=p))
        fits[p] = (m, h)
        losses[str(p)] = platt_log_loss(predict_module(m, va, device), va.y)
    best = int(_first_least(losses, 1e-9))
    return (cfg.replace(proj_dim=best), fits[best],
            {"rule": "validation", "chosen": best, "val_log_loss": losses})


@torch.no_grad()
def choose_linear_weight(module: MoEEnsemble, va: Arrays) -> tuple[float, dict[str, float]]:
    """The linear expert's weight w in (1 - w) * neural + w * linear with the least validation
    log-loss after Platt scaling, over `LINEAR_WEIGHT_GRID` (ties: the smaller weight); the
    module's own weight when the validation stays cannot decide (no labels, or under 10 of a
    class).

    Why: how much a ridge-shrunk linear logit should count against the neural experts depends
    on the data: on a few thousand stays it lowers the variance, with more stays the neural
    experts fit the interactions it cannot and a fixed share of it holds them back (on 28,800
    training stays of the `interactions` family the fixed 0.25 blend fell below one early
    fusion MLP). Two Platt parameters and one weight are fitted on the validation stays, which
    early stopping also reads; the test split is never seen (bench/VAL_SWEEP.txt step 6)."""
    default = float(module.linear_weight)
    if not _val_decides(va):
        return default, {}
    assert va.y is not None
    device = next(module.parameters()).device
    parts = predict_outputs(module, va, device, ("neural", "linear"))
    neural, linear = (parts[k].astype(np.float64) for k in ("neural", "linear"))
    losses = {f"{w:g}": platt_log_loss((1 - w) * neural + w * linear, va.y)
              for w in LINEAR_WEIGHT_GRID}
    return float(_first_least(losses, 1e-6)), losses  # ties: the smaller weight


def _single_moe(cfg: MoEConfig) -> bool:
    """Whether `cfg` makes a bare MoE (one member, no linear expert) rather than an
    `MoEEnsemble`: `fit_moe` and `build_module` (which `load` uses) must agree."""
    return cfg.ensemble == 1 and cfg.linear_weight == 0


def build_module(dims: dict[str, int], cfg: MoEConfig) -> MoE | MoEEnsemble:
    """An untrained MoE, or an ensemble of `cfg.ensemble` of them (with the linear expert
    when `linear_weight` > 0): the structure `fit_moe` returns for `cfg`."""
    if _single_moe(cfg):
        return MoE(dims, cfg.model)
    linear = LinearExpert(dims, cfg.proj_dim) if cfg.linear_weight > 0 else None
    return MoEEnsemble([MoE(dims, cfg.model) for _ in range(cfg.ensemble)], linear,
                       cfg.linear_weight)


@torch.no_grad()
def fit_linear(tr: Arrays, cfg: MoEConfig) -> LinearExpert:
    """The linear expert (`moe.linear_expert`) fitted on the train rows, over the inputs the
    MoE's encoders read (same standardisation and projection), with the same prior
    correction as the neural members."""
    from moe.linear_expert import fit_linear_expert

    assert tr.y is not None
    module, z = _linear_inputs(tr, cfg.proj_dim)
    pw = pos_weight_of(tr.y, cfg.class_weight)
    w, pattern, alpha = fit_linear_expert(z, tr.mask, tr.y, pw)
    for m in MODALITIES:
        getattr(module, f"lin_{m}").copy_(torch.from_numpy(w[m]))
    module.lin_pattern.copy_(torch.from_numpy(pattern))  # type: ignore[operator]
    if cfg.prior_correction:
        module.logit_offset.fill_(-math.log(pw))
    module.ridge_alpha = alpha
    return module.to(torch.device(resolve_device(cfg.device))).eval()


@torch.no_grad()
def _linear_inputs(tr: Arrays, proj_dim: int) -> tuple[LinearExpert, dict[str, np.ndarray]]:
    """An unfitted linear expert with its input transform from the train rows, and those
    rows' standardised, projected inputs per modality (what its ridge fit reads)."""
    module = LinearExpert(tr.dims(), proj_dim)
    fit_input_transform(module, tr, proj_dim)
    x, _ = to_tensors(tr, torch.device("cpu"))
    z = {m: cast(ModalityEncoder, module.encoders[m]).inputs(x[m]).double().numpy()
         for m in MODALITIES}
    return module, z


_WIDTH_CACHE: dict[tuple[str, int], float] = {}
_WIDTH_CACHE_MAX = 64


def width_loo_errors(tr: Arrays, widths: tuple[int, ...]) -> dict[str, float]:
    """{str(width): the linear expert's leave-one-out squared error on the train rows with
    inputs projected to that width} (`moe.linear_expert.loo_error`).

    Memoised on the rows' content, like `top_principal_directions`: every neural model of a
    task resolves its width on the same train rows (about 0.5 s of ridge fits each)."""
    from moe.linear_expert import loo_error

    assert tr.y is not None
    rows = content_key(*(tr.x[m] for m in MODALITIES), tr.mask, tr.y)
    out: dict[str, float] = {}
    for p in widths:
        if (rows, p) not in _WIDTH_CACHE:
            if len(_WIDTH_CACHE) >= _WIDTH_CACHE_MAX:
                _WIDTH_CACHE.pop(next(iter(_WIDTH_CACHE)))
            _WIDTH_CACHE[rows, p] = loo_error(_linear_inputs(tr, p)[1], tr.mask, tr.y)
        out[str(p)] = _WIDTH_CACHE[rows, p]
    return out


def resolve_proj_dim(tr: Arrays, cfg: MoEConfig) -> tuple[MoEConfig, dict[str, Any] | None]:
    """(`cfg` with the input projection width to fit with, the choice for the history).

    With `proj_dim_choice="ridge"` (the default) the width is the candidate in
    `proj_dim_candidates` whose linear expert has the least leave-one-out squared error on
    the train stays (`moe.linear_expert.loo_error`; ties: the earlier candidate). The MoE
    and every neural baseline and peer call this with the same train rows and settings, so
    they all see one input projection and a comparison between them measures the models.

    Why: the width that suits data whose signal lives in a few directions (16, the suite
    families) cost a notes-driven task 0.014 validation AUROC against 64 on the project's
    generator (bench/VAL_SWEEP.txt steps 5 and 8). Leave-one-out over every train stay is a
    far steadier score than a fit on the validation stays (`choose_proj_dim`, step 8's
    split-half check), needs no validation labels, and costs one closed-form ridge fit per
    width (step 9). With one class in the train labels, or when every candidate projects
    every modality alike, the first candidate, unscored; `cfg` unchanged for the other
    choices."""
    if cfg.proj_dim_choice != "ridge":
        return cfg, None
    assert tr.y is not None
    dims = tr.dims()
    seen: dict[tuple[int, ...], int] = {}  # candidates that project every modality alike
    for p in cfg.proj_dim_candidates:
        seen.setdefault(tuple(p if is_projected(d, p) else d for d in dims.values()), p)
    if len(seen) < 2 or len(np.unique(tr.y)) < 2:  # nothing to compare, or nothing to score
        return cfg.replace(proj_dim=cfg.proj_dim_candidates[0]), None
    errors = width_loo_errors(tr, tuple(seen.values()))
    best = int(_first_least(errors, 0.0))
    return cfg.replace(proj_dim=best), {"rule": "ridge", "chosen": best, "loo_mse": errors}


def _fit_one(
    dims: dict[str, int], tr: Arrays, va: Arrays, cfg: MoEConfig
) -> tuple[MoE, dict[str, Any]]:
    """One MoE: seeded init, input transform from train rows, training, prior correction."""
    assert tr.y is not None
    seed_everything(cfg.seed)
    module = MoE(dims, cfg.model)
    fit_input_transform(module, tr, cfg.proj_dim)
    module, hist = train_module(module, tr, va, cfg, modality_drop=cfg.modality_dropout)
    if cfg.prior_correction:
        pw = pos_weight_of(tr.y, cfg.class_weight)
        module.logit_offset.fill_(-math.log(pw))  # type: ignore[operator]
    return module, hist
