"""MedFuse (Hayat et al., "MedFuse: Multi-modal fusion with clinical time-series data and
chest X-ray images", MLHC 2022; code github.com/nyuad-cai/MedFuse), at the head level.

What defines the method, kept here: each modality's features are projected to a common
width and the stay's modalities form a sequence (EHR first, then the others) that an LSTM
reads; a **missing modality is skipped**, not filled: the sequence holds only the tokens
the stay has (MedFuse packs length-1 or length-2 sequences with `pack_padded_sequence`),
and the LSTM's last hidden state goes to a linear head. Here the sequence is the present
tokens in the order EHR, notes, CXR, so its length is the number of modalities the stay
has; because the LSTM reads left to right, taking its output at position length - 1 of
the sequence with the present tokens moved to the front is exactly the packed computation.

Simplified: the per-modality encoders are the MoE's (standardise, train PCA, Linear ->
GELU to `cfg.width`) on the cached embeddings, trained end to end with the fusion LSTM
(MedFuse pre-trains an EHR LSTM and a ResNet on the raw time series and images, which
this harness does not have), one LSTM layer of width `cfg.width`, more than two
modalities. A stay with no modality at all is read as one learned "empty" token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moe.peers.common import PeerModule
from moe.train import MoEConfig


class MedFuse(PeerModule):
    def __init__(self, dims: dict[str, int], cfg: MoEConfig):
        super().__init__(dims, cfg)
        W = cfg.width
        self.lstm = nn.LSTM(W, W, batch_first=True)
        self.empty = nn.Parameter(torch.randn(W) * 0.02)
        self.head = nn.Linear(W, 1)

    def sequence(self, x: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        """(seq (n, M, W) with each stay's present tokens first, in modality order; lengths
        (n,) = number of present modalities, at least 1). Positions from `lengths` on are
        padding the LSTM's read of the stay never reaches."""
        tok = self.encode(x)  # (n, M, W)
        # stable sort on "missing": present modalities first, in their original order
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        seq = tok.gather(1, order.unsqueeze(2).expand_as(tok))
        present = mask.gather(1, order)
        seq = torch.where(present.unsqueeze(2), seq, torch.zeros_like(seq))
        lengths = mask.sum(dim=1)
        none = lengths == 0
        first = torch.where(none.unsqueeze(1), self.empty.expand(len(seq), -1), seq[:, 0])
        seq = torch.cat([first.unsqueeze(1), seq[:, 1:]], dim=1)
        return seq, lengths.clamp(min=1)

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        seq, lengths = self.sequence(x, mask)
        out, _ = self.lstm(seq)  # (n, M, W)
        last = out[torch.arange(len(out), device=out.device), lengths - 1]
        return {"logits": self.head(last).squeeze(1) + self.logit_offset}
