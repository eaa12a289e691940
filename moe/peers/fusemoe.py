"""FuseMoE (Han et al., "FuseMoE: Mixture-of-Experts Transformers for Fleximodal Fusion",
NeurIPS 2024; code github.com/aaronhan223/FuseMoE), at the head level.

What defines the method, kept here:
- per-modality encoders to a common token width;
- a sparse MoE fusion layer with **Laplace gating**: the router logit of token x for expert
  e is the negative Euclidean distance to that expert's key, -||x - k_e||
  (`-torch.cdist(x, w_gate.T)` in FuseMoE's `_get_logits`), top-k experts per token, gates
  the softmax of the chosen logits, 0 elsewhere; noisy gating in training (logit noise with
  a learned, input-dependent scale, softplus(x W_noise) + 1e-2);
- **per-modality routers** (FuseMoE's `router_type="permod"`): each modality's token is
  routed by its own router over one shared pool of experts, and the routed outputs of the
  modalities are summed;
- the balance penalty cv²(importance) + cv²(load) per router (weight `cfg.peer_balance_weight`);
- **missing modalities** as FuseMoE treats them: a missing modality's token is a trainable
  indicator embedding (one per modality), which goes through attention and routing like
  any other token;
- the MoE layer in a Transformer block: self-attention across the modality tokens first.

Simplified: the encoders read the cached, frozen embeddings (no irregular-time-series mTAND
encoder, no fine-tuned text or image backbone); one token per modality; one Transformer
block; the load term counts dispatched tokens rather than FuseMoE's smooth
probability-of-being-in-top-k estimate; no entropy regulariser on the routers. Experts:
`n_experts` (8) two-layer MLPs of width `cfg.width` and hidden `cfg.expert_hidden`, top
`cfg.top_k` per token: the sizes of the MoE's defaults.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moe.data import MODALITIES
from moe.peers.common import PeerModule, SparseExperts, TokenAttention, cv_squared, top_k_gates
from moe.train import MoEConfig

N_EXPERTS = 8


def laplace_logits(tok: Tensor, keys: Tensor) -> Tensor:
    """(T, W) tokens, (E, W) expert keys -> (T, E) logits -||tok - key_e||."""
    return -torch.cdist(tok, keys)


class LaplaceRouter(nn.Module):
    def __init__(self, width: int, n_experts: int, top_k: int):
        super().__init__()
        # FuseMoE starts its gate weights at zero and lets the gating noise break the tie;
        # small random keys do the same without depending on the noise
        self.keys = nn.Parameter(torch.randn(n_experts, width) * 0.1)
        self.w_noise = nn.Parameter(torch.zeros(width, n_experts))
        self.top_k = top_k

    def forward(self, tok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(gates (T, E), logits (T, E) before noise, chosen (T, E))."""
        clean = laplace_logits(tok, self.keys)
        logits = clean
        if self.training:
            std = nn.functional.softplus(tok @ self.w_noise) + 1e-2
            logits = clean + torch.randn_like(clean) * std
        gates, chosen = top_k_gates(logits, self.top_k)
        return gates, clean, chosen


class FuseMoE(PeerModule):
    def __init__(self, dims: dict[str, int], cfg: MoEConfig, n_experts: int = N_EXPERTS):
        super().__init__(dims, cfg)
        W = cfg.width
        self.missing = nn.Parameter(torch.randn(len(MODALITIES), W) * 0.02)
        self.attn = TokenAttention(W, cfg.dropout)
        self.norm = nn.LayerNorm(W)
        self.routers = nn.ModuleList([LaplaceRouter(W, n_experts, cfg.top_k) for _ in MODALITIES])
        self.experts = SparseExperts(n_experts, W, cfg.expert_hidden, cfg.dropout)
        self.head = nn.Sequential(nn.LayerNorm(W), nn.Linear(W, 1))

    def tokens(self, x: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(n, M, W): encoded tokens, the modality's trainable indicator where it is missing."""
        enc = self.encode(x)
        return torch.where(mask.unsqueeze(2), enc, self.missing.unsqueeze(0).expand_as(enc))

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        tok = self.attn(self.tokens(x, mask))  # (n, M, W)
        h = self.norm(tok)
        n, M, W = h.shape
        gates, balance = [], h.new_zeros(())
        for j, router in enumerate(self.routers):  # per-modality routers, shared experts
            g, _, chosen = router(h[:, j])
            gates.append(g)
            balance = balance + cv_squared(g.sum(0)) + cv_squared(chosen.sum(0))
        g_all = torch.stack(gates, dim=1)  # (n, M, E)
        routed = self.experts(h.reshape(n * M, W), g_all.reshape(n * M, -1)).view(n, M, W)
        fused = (tok + routed).sum(dim=1)  # the modalities' routed outputs summed
        logits = self.head(fused).squeeze(1) + self.logit_offset
        return {"logits": logits, "weights": g_all, "balance": balance}
