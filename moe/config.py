"""The MoE's settings as plain dataclasses, without torch (importing this module is cheap:
the Dagster launchpad's config classes are generated from these at definition load).

`ModelConfig` is the architecture (`moe/model.py` builds it), `TrainConfig` the training
(`moe/train.py` runs it); `moe.train.MoEConfig` holds both, flat, as `moe.fit` takes them.
Both modules re-export their class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from itertools import combinations
from typing import Any

from moe.data import MODALITIES

ALL_SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    s for r in range(1, len(MODALITIES) + 1) for s in combinations(MODALITIES, r)
)


# Every `moe.fit_baseline` kind, in report order (torch-free here, so the launchpad's
# default list needs no torch; `moe.baselines.KINDS` is this tuple).
BASELINE_KINDS: tuple[str, ...] = (
    "ehr_only", "notes_only", "cxr_only", "early_fusion", "late_fusion", "gbm", "linear",
    "fusemoe", "flex_moe", "medfuse",  # the published peers (moe.peers)
)


@dataclass
class ModelConfig:
    """The MoE's architecture (and its ablation switches). Training settings are
    `moe.train.TrainConfig`; `moe.train.MoEConfig` holds both and is what `moe.fit` takes."""

    width: int = 128  # shared token width W
    expert_hidden: int = 128
    expert_layers: int = 2  # hidden layers per expert (routed and shared)
    subsets: tuple[tuple[str, ...], ...] = ALL_SUBSETS  # modality subsets that get experts
    experts_per_subset: int = 1
    top_k: int = 2  # routed experts per stay (among the eligible), plus the shared expert
    dropout: float = 0.1
    input_dropout: float = 0.0  # dropout on the standardised input vectors
    # 0: Linear (a linear token: the experts' first layer sees the inputs, so cross-modality
    # terms are formed there, as in early fusion); 1: Linear -> GELU; 2: ... -> Linear -> GELU
    encoder_layers: int = 0
    # >0: inputs wider than this go through a fixed train-PCA projection (the width the fit
    # uses when TrainConfig.proj_dim_choice is "fixed", and "validation"'s fallback)
    proj_dim: int = 16
    # ablation switches
    availability_masking: bool = True
    single_expert: bool = False  # one expert over all modalities, no mixture
    shared_expert: bool = True  # always-on expert over all tokens, added to the routed mixture
    # weight of the linear expert (`moe.linear_expert`, a ridge fit over the same inputs) in
    # the final logit: (1 - w) * mean neural logit + w * linear logit; 0: neural experts only.
    # With TrainConfig.linear_weight_choice "validation" (the default) the fit chooses w on
    # the validation stays and this is only the fallback when they cannot decide
    linear_weight: float = 0.25

    def __post_init__(self) -> None:
        self.subsets = tuple(tuple(s) for s in self.subsets)
        for s in self.subsets:
            bad = set(s) - set(MODALITIES)
            if bad or not s:
                raise ValueError(f"expert subset {s!r} must be a non-empty subset of {MODALITIES}")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.expert_layers < 1:
            raise ValueError("expert_layers must be >= 1")
        if not 0.0 <= self.linear_weight <= 1.0:
            raise ValueError(f"linear_weight must be in [0, 1], got {self.linear_weight!r}")

    def expert_subsets(self) -> list[tuple[str, ...]]:
        if self.single_expert:
            return [tuple(MODALITIES)]
        return [s for s in self.subsets for _ in range(self.experts_per_subset)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["subsets"] = [list(s) for s in self.subsets]
        return d


MODEL_FIELDS: frozenset[str] = frozenset(f.name for f in fields(ModelConfig))


@dataclass
class TrainConfig:
    """How the MoE (and the neural baselines and peers, which share the loop) are trained:
    optimisation, regularisation by modality dropout, early stopping, the seed ensemble,
    class weighting and prior correction, and where it runs (`device`, `threads`)."""

    modality_dropout: float = 0.25  # P(hide an available modality) per row, training only
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 40
    patience: int = 8
    balance_weight: float = 0.0  # the MoE's load-balancing loss weight
    peer_balance_weight: float = 0.01  # the routing loss weight of FuseMoE and Flex-MoE
    ema: float = 0.0  # >0: evaluate and keep an exponential moving average of the weights
    ensemble: int = 3  # mean logit of this many MoEs seeded seed, seed+1, ... (1: one MoE)
    class_weight: str = "balanced"  # "balanced" (pos_weight = n_neg / n_pos) or "none"
    prior_correction: bool = True  # subtract log(pos_weight) from logits at inference
    # MoE only: "platt" refits sigmoid(a * logit + b) on the validation stays after training
    # (a > 0, so rankings and AUROC are unchanged; probabilities are calibrated); "none"
    calibration: str = "platt"
    # how the linear expert's weight in the final logit is set when `linear_weight` > 0:
    # "validation" chooses it on the validation stays (`moe.train.choose_linear_weight`: the
    # Platt-scaled blend's log-loss over LINEAR_WEIGHT_GRID); "fixed" uses `linear_weight`
    linear_weight_choice: str = "validation"
    # how the input projection width `proj_dim` is set (`moe.train.resolve_proj_dim`):
    # "ridge" (default) keeps the width in `proj_dim_candidates` whose linear expert has the
    # least leave-one-out error on the train stays, for the MoE and every neural baseline and
    # peer alike; "validation" (MoE only) fits the first ensemble member once per candidate
    # and keeps the least Platt-scaled validation log-loss; "fixed" uses `proj_dim`
    # (bench/VAL_SWEEP.txt steps 5, 8 and 9)
    proj_dim_choice: str = "ridge"
    proj_dim_candidates: tuple[int, ...] = (16, 32, 64)
    seed: int = 0
    # where it runs
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", "cuda:1", ...
    threads: int = 0  # torch CPU threads while fitting; 0 leaves torch's setting

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ValueError("ensemble must be >= 1")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("ema must be in [0, 1)")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError("class_weight must be 'balanced' or 'none'")
        if self.calibration not in ("platt", "none"):
            raise ValueError("calibration must be 'platt' or 'none'")
        if self.linear_weight_choice not in ("validation", "fixed"):
            raise ValueError("linear_weight_choice must be 'validation' or 'fixed'")
        if self.proj_dim_choice not in ("ridge", "validation", "fixed"):
            raise ValueError("proj_dim_choice must be 'ridge', 'validation' or 'fixed'")
        self.proj_dim_candidates = tuple(int(p) for p in self.proj_dim_candidates)
        if not self.proj_dim_candidates or min(self.proj_dim_candidates) < 0:
            raise ValueError("proj_dim_candidates must be one or more widths >= 0")


TRAIN_FIELDS: frozenset[str] = frozenset(f.name for f in fields(TrainConfig))
