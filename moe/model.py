"""The availability-aware mixture-of-experts, in one file.

    x_ehr (n, d_e)  x_notes (n, d_n)  x_cxr (n, d_c)      mask (n, 3) bool
        |                |                |
    ModalityEncoder per modality: standardise (train stats) -> MLP -> (n, W)
    rows lacking the modality get that modality's learned *missing token* instead (n, W)
        |
    gate: [tok_e, tok_n, tok_c, avail_emb(pattern)] (n, 4W) -> MLP -> logits (n, E)
    availability masking: expert e is eligible for a row only if its subset of modalities is
    all present; ineligible logits are set to -inf *before* top-k, so a row is routed only
    among experts that can use what it has (ablation `availability_masking=False`: every
    expert is eligible and reads missing tokens, a plain top-k MoE as in FuseMoE)
        |
    experts: small MLPs, expert e reads concat(tokens of its subset) (n, |S_e| W) -> (n, W)
    mixture: sum_e w_e expert_e  (w: softmax over the top-k eligible logits, 0 elsewhere)
        |
    head: LayerNorm -> Linear -> logit (n,)   (+ a fixed prior-correction offset)

Training details (BCE with class weighting, modality dropout, load-balancing loss, early
stopping) live in `moe/train.py`. Settings: the architecture here (`ModelConfig`), training in
`moe.train.TrainConfig`; `moe.train.MoEConfig` holds both (flat keys, as `moe.fit` takes them).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from moe.config import ALL_SUBSETS, MODEL_FIELDS, ModelConfig
from moe.data import MODALITIES, SHORT

__all__ = ["ALL_SUBSETS", "MODEL_FIELDS", "ModelConfig"]  # defined in moe.config (torch-free)



def expert_names(subsets: list[tuple[str, ...]]) -> list[str]:
    """'E', 'N+C', 'E+N+C', with '#2', '#3' for further experts on the same subset."""
    seen: dict[str, int] = {}
    out = []
    for s in subsets:
        base = "+".join(SHORT[m] for m in s)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


def is_projected(d_in: int, proj_dim: int) -> bool:
    """Whether a modality of width `d_in` goes through the train-PCA projection to `proj_dim`
    (only when that makes it narrower): one rule for the MoE, the baselines and the fit."""
    return 0 < proj_dim < d_in


class EncodedInputs:
    """For modules with `self.encoders` (one ModalityEncoder per modality): load the train
    statistics and PCA projections that `moe.train.fit_input_transform` computes."""

    encoders: nn.ModuleDict

    def set_input_stats(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        for m, (mean, std) in stats.items():
            enc = self.encoders[m]
            enc.mean.copy_(mean)  # type: ignore[operator]
            enc.std.copy_(std)  # type: ignore[operator]

    def set_projections(self, proj: dict[str, Tensor]) -> None:
        for m, P in proj.items():
            enc = self.encoders[m]
            if enc.projected:  # type: ignore[union-attr]
                enc.proj.copy_(P)  # type: ignore[operator]


class ModalityEncoder(nn.Module):
    """Standardise with train statistics (buffers), optionally project onto the top
    `proj_dim` principal directions of the train vectors (a fixed buffer, for inputs wider
    than `proj_dim`), then a small MLP to width W."""

    mean: Tensor
    std: Tensor
    proj: Tensor

    def __init__(
        self, d_in: int, width: int, dropout: float, input_dropout: float, layers: int,
        proj_dim: int = 0,
    ):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        self.projected = is_projected(d_in, proj_dim)
        d = proj_dim if self.projected else d_in
        self.width_in = d  # columns of `inputs(x)`
        if self.projected:
            self.register_buffer("proj", torch.eye(d_in)[:, :proj_dim].clone())
        mods: list[nn.Module] = [nn.Dropout(input_dropout), nn.Linear(d, width)]
        if layers >= 1:  # 0: a linear token, so the experts' first layer sees the inputs
            mods.append(nn.GELU())
        if layers > 1:
            mods += [nn.Dropout(dropout), nn.Linear(width, width), nn.GELU()]
        self.net = nn.Sequential(*mods)

    def inputs(self, x: Tensor) -> Tensor:
        """(n, d_in) -> the standardised (and projected) inputs the MLP reads."""
        z = (x - self.mean) / self.std
        return z @ self.proj if self.projected else z

    def forward(self, x: Tensor) -> Tensor:  # (n, d_in) -> (n, W)
        return self.net(self.inputs(x))


def pattern_index(mask: Tensor) -> Tensor:
    """(n, 3) bool -> (n,) availability pattern, bit j set when modality j is present (the
    index of the gate's pattern embedding and of the linear expert's intercepts)."""
    return (mask.long() * (2 ** torch.arange(mask.shape[1], device=mask.device))).sum(1)


def linear_logit(z: dict[str, Tensor], mask: Tensor, module: nn.Module) -> Tensor:
    """The linear expert's logit (`moe.linear_expert`): sum over present modalities of
    z_m . lin_<m>, plus the availability pattern's intercept `lin_pattern[pattern]`; `module`
    holds those buffers. A missing modality's z (possibly NaN) is never read."""
    out = cast(Tensor, module.lin_pattern)[pattern_index(mask)]
    for j, m in enumerate(MODALITIES):
        lin_m = z[m] @ cast(Tensor, getattr(module, f"lin_{m}"))
        out = out + torch.where(mask[:, j], lin_m, torch.zeros_like(lin_m))
    return out


def register_linear(module: nn.Module, widths: dict[str, int]) -> None:
    """Zero buffers for the linear expert's weights (`lin_<m>`, one per input column the
    encoder reads) and pattern intercepts (`lin_pattern`); `moe.train.fit_linear` sets them."""
    for m in MODALITIES:
        module.register_buffer(f"lin_{m}", torch.zeros(widths[m]))
    module.register_buffer("lin_pattern", torch.zeros(2 ** len(MODALITIES)))


class Expert(nn.Module):
    """MLP d_in -> hidden (GELU, dropout) [-> hidden, `layers` - 1 more times] -> width."""

    def __init__(self, d_in: int, hidden: int, width: int, dropout: float, layers: int = 1):
        super().__init__()
        mods: list[nn.Module] = [nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout)]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*mods, nn.Linear(hidden, width))

    @property
    def layers(self) -> list[nn.Linear]:
        """The linear layers in order, for the batched evaluation in `MoE.expert_outputs`."""
        return [cast(nn.Linear, m) for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def route(logits: Tensor, eligible: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k routing restricted to eligible experts.

    logits (n, E), eligible (n, E) bool. Returns
    - weights (n, E): softmax over the chosen (<= k, all eligible) experts, exactly 0 elsewhere;
      a row with no eligible expert gets all zeros,
    - probs (n, E): softmax over all eligible experts (for the load-balancing loss),
    - dispatch (n, E): 1 where an expert was chosen.
    """
    k = min(k, logits.shape[1])
    neg = torch.finfo(logits.dtype).min / 4  # finite, so no NaN for rows with no eligible expert
    masked = logits.masked_fill(~eligible, neg)
    top_val, top_idx = masked.topk(k, dim=1)  # (n, k)
    chosen_ok = eligible.gather(1, top_idx)  # a top-k slot may hold an ineligible expert
    w = torch.softmax(top_val, dim=1) * chosen_ok  # exp(neg - max) == 0 for those slots
    weights = torch.zeros_like(logits).scatter(1, top_idx, w)
    any_ok = eligible.any(dim=1, keepdim=True)
    probs = torch.softmax(masked, dim=1) * eligible * any_ok
    dispatch = torch.zeros_like(logits).scatter(1, top_idx, chosen_ok.to(logits.dtype))
    return weights, probs, dispatch


def load_balance_loss(probs: Tensor, dispatch: Tensor, eligible: Tensor) -> Tensor:
    """Switch-style balance loss over *eligible* experts; equals 1 when routing is uniform.

    For expert e let u_e be its expected share of routing if every row spread its choices
    uniformly over its own eligible experts; f_e the observed dispatch share and p_e the mean
    gate probability, both divided by u_e. The loss sum_e (u_e / N) f_e p_e has
    sum_e (u_e / N) f_e = sum_e (u_e / N) p_e = 1, so it is minimal (1) when f = p = 1, i.e.
    when each expert gets what availability allows, and grows as routing collapses.
    """
    n_elig = eligible.sum(dim=1, keepdim=True)
    rows = n_elig.squeeze(1) > 0
    if not bool(rows.any()):
        return probs.sum() * 0.0
    elig = eligible[rows].to(probs.dtype)
    uniform = elig / n_elig[rows].to(probs.dtype)
    disp = dispatch[rows]
    disp = disp / disp.sum(dim=1, keepdim=True).clamp(min=1.0)
    u = uniform.sum(dim=0)
    keep = u > 0
    f = disp.sum(dim=0)[keep] / u[keep]
    p = probs[rows].sum(dim=0)[keep] / u[keep]
    w = u[keep] / rows.sum()
    return (w * f * p).sum()


class MoE(EncodedInputs, nn.Module):
    need: Tensor  # (E, 3) bool buffer: modalities each expert reads
    logit_offset: Tensor  # scalar buffer: -log(pos_weight) after training (prior correction)

    def __init__(self, dims: dict[str, int], cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.dims = {m: int(dims[m]) for m in MODALITIES}
        W = cfg.width
        self.subsets = cfg.expert_subsets()
        self.expert_names = expert_names(self.subsets)
        self.masking = cfg.availability_masking and not cfg.single_expert
        self.encoders = nn.ModuleDict(
            {
                m: ModalityEncoder(
                    self.dims[m], W, cfg.dropout, cfg.input_dropout, cfg.encoder_layers,
                    cfg.proj_dim,
                )
                for m in MODALITIES
            }
        )
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(W) * 0.02) for m in MODALITIES}
        )
        self.avail_emb = nn.Embedding(2 ** len(MODALITIES), W)
        E = len(self.subsets)
        self.gate = nn.Sequential(
            nn.Linear((len(MODALITIES) + 1) * W, W), nn.GELU(), nn.Linear(W, E)
        )
        self.experts = nn.ModuleList(
            [Expert(len(s) * W, cfg.expert_hidden, W, cfg.dropout, cfg.expert_layers)
             for s in self.subsets]
        )
        # (E, 3) which modalities each expert needs
        need = torch.tensor([[m in s for m in MODALITIES] for s in self.subsets], dtype=torch.bool)
        self.register_buffer("need", need)
        self.expert_drop = nn.Dropout(cfg.dropout)
        self.shared: Expert | None = None
        if cfg.shared_expert and not cfg.single_expert:
            self.shared = Expert(len(MODALITIES) * W, cfg.expert_hidden, W, cfg.dropout,
                                 cfg.expert_layers)
        self.head = nn.Sequential(nn.LayerNorm(W), nn.Linear(W, 1))
        self.register_buffer("logit_offset", torch.zeros(()))

    @property
    def n_experts(self) -> int:
        return len(self.subsets)

    def eligibility(self, mask: Tensor) -> Tensor:
        """(n, E) bool: expert e is eligible iff every modality it needs is present."""
        if not self.masking:
            return torch.ones(mask.shape[0], self.n_experts, dtype=torch.bool, device=mask.device)
        # expert needs m and m is absent -> ineligible
        lacks = self.need.unsqueeze(0) & ~mask.unsqueeze(1)  # (n, E, 3)
        return ~lacks.any(dim=2)

    def expert_outputs(self, tok: Tensor) -> Tensor:
        """(n, 3W) concatenated tokens -> (n, E, W): every expert in two matmuls.

        Expert e's first layer reads only its subset's tokens: its weight blocks sit at those
        tokens' positions of an otherwise zero (H, 3W) matrix (the zeros are constants, not
        parameters), so one matmul runs all first layers and one batched matmul all second
        layers. The same function as calling each `Expert` on the concat of its tokens."""
        W, H = self.cfg.width, self.cfg.expert_hidden
        zero = tok.new_zeros(H, W)
        w1s: list[Tensor] = []
        b1s: list[Tensor] = []
        later: list[list[nn.Linear]] = []
        for e, s in zip(self.experts, self.subsets, strict=True):
            lin1, *rest = cast(Expert, e).layers
            blocks: list[Tensor] = []
            pos = 0
            for m in MODALITIES:
                if m in s:
                    blocks.append(lin1.weight[:, pos : pos + W])
                    pos += W
                else:
                    blocks.append(zero)
            w1s.append(torch.cat(blocks, dim=1))
            b1s.append(lin1.bias)
            later.append(rest)
        E = len(w1s)
        h = torch.addmm(torch.cat(b1s), tok, torch.cat(w1s, dim=0).t())  # (n, E*H)
        h = self.expert_drop(nn.functional.gelu(h)).view(-1, E, H).transpose(0, 1)  # (E, n, H)
        for i in range(len(later[0])):  # hidden layers, then the output layer, batched over E
            w = torch.stack([r[i].weight for r in later]).transpose(1, 2)
            b = torch.stack([r[i].bias for r in later]).unsqueeze(1)
            h = torch.baddbmm(b, h, w)
            if i < len(later[0]) - 1:
                h = self.expert_drop(nn.functional.gelu(h))
        return h.transpose(0, 1)  # (n, E, W)

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """x[m] (n, d_m), mask (n, 3) bool -> logits (n,), weights (n, E), balance (scalar)."""
        tokens = {}
        for j, m in enumerate(MODALITIES):
            enc = self.encoders[m](x[m])  # (n, W)
            present = mask[:, j : j + 1]
            # torch.where: rows without m never see (nor send gradient to) their x[m]
            tokens[m] = torch.where(present, enc, self.missing[m].expand_as(enc))
        pattern = self.avail_emb(pattern_index(mask))
        gate_in = torch.cat([tokens[m] for m in MODALITIES] + [pattern], dim=1)
        logits_g = self.gate(gate_in)  # (n, E)
        eligible = self.eligibility(mask)
        weights, probs, dispatch = route(logits_g, eligible, self.cfg.top_k)
        tok = torch.cat([tokens[m] for m in MODALITIES], dim=1)  # (n, 3W)
        mixed = (weights.unsqueeze(2) * self.expert_outputs(tok)).sum(dim=1)  # (n, W)
        if self.shared is not None:
            mixed = mixed + self.shared(tok)
        logits = self.head(mixed).squeeze(1) + self.logit_offset
        return {
            "logits": logits,
            "weights": weights,
            "eligible": eligible,
            "balance": load_balance_loss(probs, dispatch, eligible),
        }


class LinearExpert(EncodedInputs, nn.Module):
    """The linear expert (`moe.linear_expert`): a fixed linear logit over the standardised,
    projected inputs (the same transform as the MoE's encoders, whose MLPs it does not use),
    with one intercept per availability pattern. Also the `linear` baseline on its own."""

    logit_offset: Tensor
    ridge_alpha: float | None = None  # the penalty the fit chose (not saved; for the history)

    def __init__(self, dims: dict[str, int], proj_dim: int):
        super().__init__()
        self.dims = {m: int(dims[m]) for m in MODALITIES}
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(self.dims[m], 1, 0.0, 0.0, 0, proj_dim) for m in MODALITIES}
        )
        register_linear(self, {m: cast(ModalityEncoder, self.encoders[m]).width_in
                               for m in MODALITIES})
        self.register_buffer("logit_offset", torch.zeros(()))

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        z = {m: cast(ModalityEncoder, self.encoders[m]).inputs(x[m]) for m in MODALITIES}
        return {"logits": linear_logit(z, mask, self) + self.logit_offset}


class MoEEnsemble(nn.Module):
    """Independently seeded MoEs averaged (mean logit, mean gate weights, mean balance loss),
    blended with the linear expert when there is one:
    logit = (1 - linear_weight) * mean member logit + linear_weight * linear logit
    (the weight is a buffer: `moe.train.fit_moe` chooses it on the validation stays).
    Seed averaging lowers the variance of a fit on a few thousand stays, and the linear
    expert, fitted in closed form with a penalty chosen by cross-validation, lowers it
    further where the signal is mostly linear; member 0 is the single MoE with the same seed."""

    linear_weight: Tensor  # scalar buffer, saved with the state: the fit may choose it

    def __init__(self, members: list[MoE], linear: LinearExpert | None = None,
                 linear_weight: float = 0.0):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.linear = linear
        w = float(linear_weight) if linear is not None else 0.0
        self.register_buffer("linear_weight", torch.tensor(w, dtype=torch.float32))
        self.dims = dict(members[0].dims)
        self.expert_names = list(members[0].expert_names)

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        outs = [m(x, mask) for m in self.members]
        neural = torch.stack([o["logits"] for o in outs]).mean(dim=0)
        logits = neural
        linear = torch.zeros_like(neural)
        if self.linear is not None:
            w = self.linear_weight
            linear = self.linear(x, mask)["logits"]
            logits = (1.0 - w) * neural + w * linear
        return {
            "logits": logits,
            "neural": neural,  # the parts, for choosing the weight (moe.train)
            "linear": linear,
            "weights": torch.stack([o["weights"] for o in outs]).mean(dim=0),
            "eligible": outs[0]["eligible"],
            "balance": torch.stack([o["balance"] for o in outs]).mean(),
        }
