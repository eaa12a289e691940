"""Flex-MoE (Yun et al., "Flex-MoE: Modeling Arbitrary Modality Combination via the Flexible
Mixture-of-Experts", NeurIPS 2024; code github.com/UNITES-Lab/flex-moe), at the head level.

What defines the method, kept here:
- the **missing-modality bank**: a learned embedding for every (modality combination,
  missing modality) pair (`missing_embeds[combination, modality]` in Flex-MoE); a stay that
  lacks modality m gets the bank entry of its own combination for m, so the filler depends
  on what the stay does have;
- one expert per modality combination (2^M - 1 = 7), the full combination being index 0;
- the **generalised router** (G-Router) trained first on the stays that have every
  modality (Flex-MoE's warm-up epochs, whose loader puts complete stays first), with the
  sparsely-gated MoE balance penalty over all experts;
- then the **specialised router** (S-Router) on all stays: a stay with an incomplete
  combination c is sent to expert c as its first choice (the paper's "top-1 gate to the
  expert of the observed combination"), the remaining top-k slots chosen by the router,
  and a cross-entropy term trains the router's logits towards c (Flex-MoE's
  `expert_idx_loss`); the balance penalty for those stays counts experts 1.. only;
  complete stays keep the generalised top-k routing;
- the sparse MoE layer in a Transformer block over the modality tokens (attention, then the
  routed MLP on every token), and a linear head on the concatenated tokens.

Simplified: frozen cached embeddings (no per-modality patch encoders or 3D CNN), one token
per modality instead of patches, one Transformer block, no noisy gating, the load term
counts dispatched tokens. A stay with no modality at all (Flex-MoE drops such stays) gets
bank entries for the empty pattern and plain top-k routing. Widths are the MoE's defaults
(`cfg.width`, `cfg.expert_hidden`, `cfg.top_k`); the warm-up lasts max(1, max_epochs // 10)
epochs (Flex-MoE: 5 of 50).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from moe.data import MODALITIES, Arrays
from moe.peers.common import (
    PeerModule,
    SparseExperts,
    TokenAttention,
    cv_squared,
    pattern_bits,
    rows_with_all,
)
from moe.train import MoEConfig, train_module

# Flex-MoE's combination index: the full combination first (index 0), then by size
COMBINATIONS: tuple[tuple[str, ...], ...] = tuple(
    c for r in range(len(MODALITIES), 0, -1) for c in combinations(MODALITIES, r)
)
FULL = 0


def combination_table() -> torch.Tensor:
    """(2^M,) long: pattern bits -> combination index (-1 for the empty pattern)."""
    out = torch.full((2 ** len(MODALITIES),), -1, dtype=torch.long)
    for i, c in enumerate(COMBINATIONS):
        out[sum(1 << MODALITIES.index(m) for m in c)] = i
    return out


def specialised_gates(logits: Tensor, designated: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k gates where rows with `designated >= 0` always choose that expert first.

    logits (..., E), designated (...,) long. The selection: the designated expert, then the
    k-1 (k for rows without one) largest other logits; gates: softmax of the chosen logits."""
    k = min(k, logits.shape[-1])
    has = designated >= 0
    onehot = nn.functional.one_hot(designated.clamp(min=0), logits.shape[-1]).to(torch.bool)
    onehot = onehot & has.unsqueeze(-1)
    # the selection ranks on a detached copy with the designated expert lifted to the top;
    # the gates are the softmax of the router's own logits over the selection
    rank = logits.detach().masked_fill(onehot, torch.finfo(logits.dtype).max)
    _, idx = rank.topk(k, dim=-1)
    w = torch.softmax(logits.gather(-1, idx), dim=-1)
    gates = torch.zeros_like(logits).scatter(-1, idx, w)
    chosen = torch.zeros_like(logits).scatter(-1, idx, 1.0)
    return gates, chosen


class FlexMoE(PeerModule):
    combo_of_bits: Tensor

    def __init__(self, dims: dict[str, int], cfg: MoEConfig):
        super().__init__(dims, cfg)
        W, M = cfg.width, len(MODALITIES)
        self.n_experts = len(COMBINATIONS)
        # bank[pattern, modality]: the filler for modality m in stays with that pattern
        self.bank = nn.Parameter(torch.randn(2**M, M, W) * 0.02)
        self.register_buffer("combo_of_bits", combination_table())
        self.attn = TokenAttention(W, cfg.dropout)
        self.norm = nn.LayerNorm(W)
        self.router = nn.Linear(W, self.n_experts, bias=False)
        self.experts = SparseExperts(self.n_experts, W, cfg.expert_hidden, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(M * W, 1)

    def tokens(self, x: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(n, M, W): encoded tokens; a missing modality's token is the bank entry of the
        stay's combination for that modality."""
        enc = self.encode(x)
        filler = self.bank[pattern_bits(mask)]  # (n, M, W)
        return torch.where(mask.unsqueeze(2), enc, filler)

    def combination(self, mask: Tensor) -> Tensor:
        """(n,) Flex-MoE combination index of each stay (0: all modalities; -1: none)."""
        return self.combo_of_bits[pattern_bits(mask)]

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        tok = self.attn(self.tokens(x, mask))
        h = self.norm(tok)
        n, M, W = h.shape
        combo = self.combination(mask)  # (n,)
        special = combo > FULL  # incomplete (non-empty) combinations: the S-Router
        designated = torch.where(special, combo, torch.full_like(combo, -1))
        logits = self.router(h)  # (n, M, E): every token of a stay routed
        gates, chosen = specialised_gates(logits, designated.unsqueeze(1).expand(n, M),
                                          self.cfg.top_k)
        routed = self.experts(h.reshape(n * M, W), gates.reshape(n * M, -1)).view(n, M, W)
        tok = tok + self.drop(routed)
        out = self.head(tok.reshape(n, M * W)).squeeze(1) + self.logit_offset
        return {"logits": out, "weights": gates, "balance": self.router_loss(logits, gates,
                                                                             chosen, special, combo)}

    def router_loss(self, logits: Tensor, gates: Tensor, chosen: Tensor, special: Tensor,
                    combo: Tensor) -> Tensor:
        loss = logits.new_zeros(())
        general = ~special
        if bool(general.any()):  # G-Router: balance over every expert
            loss = loss + cv_squared(gates[general].sum((0, 1))) \
                + cv_squared(chosen[general].sum((0, 1)))
        if bool(special.any()):  # S-Router: towards the combination's expert; balance 1..
            lg = logits[special]  # (s, M, E)
            target = combo[special].unsqueeze(1).expand(-1, lg.shape[1])
            loss = loss + nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]),
                                                      target.reshape(-1))
            loss = loss + cv_squared(gates[special][..., 1:].sum((0, 1))) \
                + cv_squared(chosen[special][..., 1:].sum((0, 1)))
        return loss

    def train_stages(self, tr: Arrays, va: Arrays, cfg: MoEConfig) -> dict[str, Any]:
        """Warm-up on the complete stays (G-Router), then every stay (S-Router)."""
        hist: dict[str, Any] = {}
        full_tr, full_va = rows_with_all(tr), rows_with_all(va)
        warm = max(1, cfg.max_epochs // 10)
        assert tr.y is not None
        if len(full_tr) and len(np.unique(tr.y[full_tr])) == 2:
            wcfg = cfg.replace(max_epochs=warm, patience=warm)
            _, hist["warmup"] = train_module(self, tr.subset(full_tr), va.subset(full_va), wcfg)
        _, main = train_module(self, tr, va, cfg, modality_drop=0.0)
        hist.update(main)
        if "warmup" in hist:
            hist["seconds"] += hist["warmup"]["seconds"]
        return hist
