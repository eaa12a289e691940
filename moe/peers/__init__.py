"""Published multimodal fusion methods re-implemented at the head level, for comparison with
the MoE on the same cached vectors, splits and training loop (`moe.train`).

- `fusemoe` (Han et al., NeurIPS 2024): per-modality Laplace routers over a shared pool of
  sparse top-k experts (`moe.peers.fusemoe`).
- `flex_moe` (Yun et al., NeurIPS 2024): missing-modality bank, generalised router trained on
  complete stays first, then a specialised router that sends each modality combination to
  its own expert (`moe.peers.flex_moe`).
- `medfuse` (Hayat et al., MLHC 2022): an LSTM over the sequence of the modality tokens a stay
  has, its last state to the head (`moe.peers.medfuse`).

Each is a `kind` of `moe.fit_baseline`; `PEERS` maps the kind to its module class and
`fit_peer` trains one.
"""

from __future__ import annotations

from moe.peers.common import PeerModule, fit_peer
from moe.peers.flex_moe import FlexMoE
from moe.peers.fusemoe import FuseMoE
from moe.peers.medfuse import MedFuse

PEERS: dict[str, type[PeerModule]] = {"fusemoe": FuseMoE, "flex_moe": FlexMoE, "medfuse": MedFuse}
PEER_KINDS: tuple[str, ...] = tuple(PEERS)

__all__ = ["PEERS", "PEER_KINDS", "FlexMoE", "FuseMoE", "MedFuse", "PeerModule", "fit_peer"]
