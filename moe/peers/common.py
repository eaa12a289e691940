"""What the peers share: the MoE's per-modality encoders, a token self-attention block, a
pool of sparsely evaluated experts, the balance penalty of the sparsely-gated MoE, and the fit.

Every peer reads the same inputs as the MoE: each modality's cached vector, standardised
with train statistics and, when wider than `proj_dim`, projected on its train principal
directions (`moe.model.ModalityEncoder`, loaded by `moe.train.fit_input_transform`), then
Linear -> GELU to the token width `cfg.width` (always one nonlinear layer,
`PEER_ENCODER_LAYERS`, as the published methods encode each modality; the MoE's
`encoder_layers` is its own), and their routing losses have their own weight
(`peer_balance_weight`, 0.01, the MoE's being `balance_weight`). They train with `moe.train.train_module`
(class-weighted BCE, AdamW, early stopping on val AUPRC, seeds) without modality dropout
(none of the published methods uses it) and get the same prior correction, so that a
difference from the MoE measures the fusion method, not the plumbing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moe.data import MODALITIES, Arrays
from moe.model import EncodedInputs, ModalityEncoder
from moe.train import (
    MoEConfig,
    fit_input_transform,
    pos_weight_of,
    seed_everything,
    train_module,
)

PEER_ENCODER_LAYERS = 1  # Linear -> GELU per modality, as the published methods encode


class PeerModule(EncodedInputs, nn.Module):
    """Per-modality encoders and the prior-correction offset; subclasses fuse the tokens.

    `forward(x, mask)` returns at least `logits` (n,); `balance` (a scalar) when the method
    has an auxiliary routing loss (added with weight `cfg.peer_balance_weight`)."""

    logit_offset: Tensor

    def __init__(self, dims: dict[str, int], cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.dims = {m: int(dims[m]) for m in MODALITIES}
        self.encoders = nn.ModuleDict({
            m: ModalityEncoder(self.dims[m], cfg.width, cfg.dropout, cfg.input_dropout,
                               PEER_ENCODER_LAYERS, cfg.proj_dim)
            for m in MODALITIES
        })
        self.register_buffer("logit_offset", torch.zeros(()))

    def encode(self, x: dict[str, Tensor]) -> Tensor:
        """(n, M, W): every modality's token, as if present (callers replace missing ones)."""
        return torch.stack([self.encoders[m](x[m]) for m in MODALITIES], dim=1)

    def train_stages(self, tr: Arrays, va: Arrays, cfg: MoEConfig) -> dict[str, Any]:
        """Train in place (the default: one `train_module` run); returns the history."""
        _, hist = train_module(self, tr, va, cfg, modality_drop=0.0)
        return hist


def heads_for(width: int) -> int:
    return next(h for h in (4, 2, 1) if width % h == 0)


class TokenAttention(nn.Module):
    """Pre-norm multi-head self-attention across the modality tokens, with a residual: the
    attention sublayer of the Transformer blocks FuseMoE and Flex-MoE put around their
    sparse MoE layer."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads_for(width), dropout=dropout,
                                          batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, tok: Tensor) -> Tensor:  # (n, M, W) -> (n, M, W)
        h = self.norm(tok)
        out, _ = self.attn(h, h, h, need_weights=False)
        return tok + self.drop(out)


class SparseExperts(nn.Module):
    """E two-layer MLP experts (W -> H -> W). `forward(h (T, W), gates (T, E))` returns
    sum_e gates[:, e] * expert_e(h), evaluating expert e only on the tokens with a non-zero
    gate for it (the sparse dispatch of a sparsely-gated MoE)."""

    def __init__(self, n_experts: int, width: int, hidden: int, dropout: float):
        super().__init__()
        s1, s2 = 1 / math.sqrt(width), 1 / math.sqrt(hidden)
        self.w1 = nn.Parameter(torch.empty(n_experts, width, hidden).uniform_(-s1, s1))
        self.b1 = nn.Parameter(torch.empty(n_experts, hidden).uniform_(-s1, s1))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, width).uniform_(-s2, s2))
        self.b2 = nn.Parameter(torch.empty(n_experts, width).uniform_(-s2, s2))
        self.drop = nn.Dropout(dropout)
        self.n_experts = n_experts

    def expert(self, e: int, h: Tensor) -> Tensor:
        z = self.drop(nn.functional.gelu(h @ self.w1[e] + self.b1[e]))
        return z @ self.w2[e] + self.b2[e]

    def forward(self, h: Tensor, gates: Tensor) -> Tensor:
        out = h.new_zeros(h.shape)
        for e in range(self.n_experts):
            rows = torch.nonzero(gates[:, e] > 0).squeeze(1)
            if rows.numel() == 0:
                continue
            y = self.expert(e, h[rows]) * gates[rows, e : e + 1]
            out = out.index_add(0, rows, y)
        return out


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation (the sparsely-gated MoE's balance penalty); 0 for
    fewer than two values."""
    if x.numel() < 2:
        return x.sum() * 0.0
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


def top_k_gates(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(gates, chosen): softmax over each row's k largest logits, exactly 0 elsewhere; chosen
    (..., E) is 1 where an expert was picked."""
    k = min(k, logits.shape[-1])
    top_val, top_idx = logits.topk(k, dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, top_idx, torch.softmax(top_val, dim=-1))
    chosen = torch.zeros_like(logits).scatter(-1, top_idx, 1.0)
    return gates, chosen


def fit_peer(cls: type[PeerModule], tr: Arrays, va: Arrays, cfg: MoEConfig
             ) -> tuple[PeerModule, dict[str, Any]]:
    """Seeded init, input transform from the train rows, the method's training stages, and
    the MoE's prior correction."""
    assert tr.y is not None
    cfg = cfg.replace(balance_weight=cfg.peer_balance_weight)  # the peers' own routing loss
    seed_everything(cfg.seed)
    module = cls(tr.dims(), cfg)
    fit_input_transform(module, tr, cfg.proj_dim)
    hist = module.train_stages(tr, va, cfg)
    module.eval()
    if cfg.prior_correction:
        module.logit_offset.fill_(-math.log(pos_weight_of(tr.y, cfg.class_weight)))
    return module, hist


def pattern_bits(mask: Tensor) -> Tensor:
    """(n,) availability pattern 0..2^M-1 (bit j set when modality j is present)."""
    return (mask.long() * (2 ** torch.arange(mask.shape[1], device=mask.device))).sum(1)


def rows_with_all(a: Arrays) -> np.ndarray:
    return np.flatnonzero(a.mask.all(axis=1))
