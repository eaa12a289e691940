"""The published peers (moe/peers): each method's defining mechanism, and that each fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moe
from moe.data import MODALITIES, extract
from moe.metrics import auroc
from moe.peers import PEER_KINDS, FlexMoE, FuseMoE, MedFuse
from moe.peers import flex_moe as flex_module
from moe.peers.common import SparseExperts, top_k_gates
from moe.peers.flex_moe import COMBINATIONS, specialised_gates
from moe.peers.fusemoe import LaplaceRouter, laplace_logits
from moe.toydata import make_table
from moe.train import MoEConfig

torch.set_num_threads(1)
DIMS = {"ehr": 5, "notes": 7, "cxr": 9}
CFG = MoEConfig(width=8, expert_hidden=12, dropout=0.0, top_k=2, proj_dim=0)
# every availability pattern, twice
PATTERNS = torch.tensor([[(p >> j) & 1 for j in range(3)] for p in range(8)] * 2, dtype=torch.bool)


def inputs(n: int = len(PATTERNS), seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    return x, PATTERNS[:n].clone()


def module(cls, seed: int = 0):
    torch.manual_seed(seed)
    return cls(DIMS, CFG).eval()


# ---------------------------------------------------------------------------------------
# FuseMoE
# ---------------------------------------------------------------------------------------
def test_laplace_logits_are_the_negative_distance_to_each_expert_key():
    g = torch.Generator().manual_seed(1)
    tok, keys = torch.randn(6, 4, generator=g), torch.randn(5, 4, generator=g)
    by_hand = -((tok[:, None, :] - keys[None, :, :]) ** 2).sum(-1).sqrt()
    assert torch.allclose(laplace_logits(tok, keys), by_hand, atol=1e-5)


def test_laplace_router_picks_the_k_nearest_keys_with_softmax_of_negative_distance():
    torch.manual_seed(0)
    router = LaplaceRouter(width=4, n_experts=6, top_k=2).eval()
    tok = torch.randn(10, 4)
    gates, clean, chosen = router(tok)
    dist = torch.cdist(tok, router.keys)
    nearest = dist.argsort(dim=1)[:, :2]
    for r in range(10):
        assert set(torch.nonzero(gates[r]).squeeze(1).tolist()) == set(nearest[r].tolist())
        d = dist[r, nearest[r]]
        assert torch.allclose(gates[r, nearest[r]], torch.softmax(-d, 0), atol=1e-5)
    assert torch.allclose(gates.sum(1), torch.ones(10)) and torch.equal(chosen > 0, gates > 0)
    assert torch.allclose(clean, -dist, atol=1e-5)
    # moving one key onto a token makes that expert the token's first choice
    with torch.no_grad():
        router.keys[5] = tok[3]
    g2, _, _ = router(tok)
    assert g2[3].argmax() == 5


def test_fusemoe_routes_each_modality_with_its_own_router():
    m = module(FuseMoE)
    x, mask = inputs()
    w = m(x, mask)["weights"]  # (n, M, E)
    assert w.shape == (len(mask), 3, 8) and torch.allclose(w.sum(2), torch.ones(len(mask), 3))
    assert ((w > 0).sum(2) == CFG.top_k).all()
    with torch.no_grad():  # a change to the notes router moves only the notes tokens' gates
        m.routers[1].keys.mul_(-3.0)
    w2 = m(x, mask)["weights"]
    assert torch.equal(w2[:, 0], w[:, 0]) and torch.equal(w2[:, 2], w[:, 2])
    assert not torch.equal(w2[:, 1], w[:, 1])


def test_fusemoe_missing_modality_is_its_trainable_indicator():
    m = module(FuseMoE)
    x, mask = inputs()
    tok = m.tokens(x, mask)
    for j in range(3):
        assert torch.equal(tok[~mask[:, j], j], m.missing[j].expand(int((~mask[:, j]).sum()), -1))
        assert torch.allclose(tok[mask[:, j], j], m.encoders[MODALITIES[j]](x[MODALITIES[j]])[mask[:, j]])
    before = m(x, mask)["logits"]
    x2 = {k: v.clone() for k, v in x.items()}
    x2["cxr"][~mask[:, 2]] = 100.0  # what a stay lacks never reaches the output
    assert torch.equal(m(x2, mask)["logits"], before)


def test_sparse_experts_equal_the_dense_weighted_sum():
    torch.manual_seed(0)
    ex = SparseExperts(5, 4, 6, dropout=0.0)
    h = torch.randn(20, 4)
    gates, _ = top_k_gates(torch.randn(20, 5), 2)
    dense = sum(gates[:, e : e + 1] * ex.expert(e, h) for e in range(5))
    assert torch.allclose(ex(h, gates), dense, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Flex-MoE
# ---------------------------------------------------------------------------------------
def test_combination_index_puts_the_full_combination_first():
    m = module(FlexMoE)
    combo = m.combination(PATTERNS[:8])
    assert combo[0] == -1 and combo[7] == 0  # empty pattern; all three modalities
    assert sorted(combo[1:].tolist()) == list(range(7))
    for p in range(1, 8):
        have = tuple(mod for j, mod in enumerate(MODALITIES) if (p >> j) & 1)
        assert COMBINATIONS[int(combo[p])] == have


def test_specialised_router_sends_each_combination_to_its_expert():
    m = module(FlexMoE)
    with torch.no_grad():  # a router that, left alone, would pick experts 0 and 1 for everyone
        m.router.weight.zero_()
    m.router.weight.requires_grad_(False)
    x, mask = inputs()
    # bias through a hook: logits (.., E) + [10, 9, 0, ...]
    bias = torch.tensor([10.0, 9.0] + [0.0] * 5)
    m.router.register_forward_hook(lambda mod, inp, out: out + bias)
    w = m(x, mask)["weights"]  # (n, M, E)
    combo = m.combination(mask)
    for r in range(len(mask)):
        c = int(combo[r])
        if c > 0:  # incomplete combination: its own expert, first choice, on every token
            assert (w[r, :, c] > 0).all()
            assert ((w[r] > 0).sum(1) == 2).all()
            assert set(torch.nonzero(w[r, 0]).squeeze(1).tolist()) == {c, 0}
        else:  # complete (or empty): the generalised router's plain top-k
            assert set(torch.nonzero(w[r, 0]).squeeze(1).tolist()) == {0, 1}


def test_specialised_gates_are_the_softmax_of_the_router_logits_over_the_selection():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]], requires_grad=True)
    gates, chosen = specialised_gates(logits, torch.tensor([3, -1]), 2)
    assert torch.allclose(gates[0], torch.tensor([torch.e**3, 0, 0, 1]) / (torch.e**3 + 1))
    assert torch.allclose(gates[1, :2], torch.softmax(torch.tensor([3.0, 2.0]), 0))
    assert chosen.sum().item() == 4
    gates[0, 3].backward()
    assert logits.grad is not None and logits.grad[0, 3] > 0  # the router learns the weights


def test_missing_modality_bank_fills_exactly_the_missing_modalities_by_combination():
    m = module(FlexMoE)
    x, mask = inputs()
    tok = m.tokens(x, mask)
    bits = (mask.long() * torch.tensor([1, 2, 4])).sum(1)
    for r in range(len(mask)):
        for j, mod in enumerate(MODALITIES):
            if mask[r, j]:
                assert torch.allclose(tok[r, j], m.encoders[mod](x[mod][r : r + 1])[0])
            else:
                assert torch.equal(tok[r, j], m.bank[bits[r], j])
    # the bank entry of another combination, or of a present modality, changes nothing
    r = 3  # pattern E+N (bits 3): CXR missing
    with torch.no_grad():
        m.bank[5, 2] += 1.0  # E+C's CXR entry (E+C has CXR: never used) ...
        m.bank[1, 2] += 1.0  # ... and E-only's CXR filler
    tok2 = m.tokens(x, mask)
    assert torch.equal(tok2[r], tok[r])
    assert not torch.equal(tok2[1], tok[1])  # pattern E: its CXR filler moved
    before = m(x, mask)["logits"]
    x2 = {k: v.clone() for k, v in x.items()}
    x2["notes"][~mask[:, 1]] = -50.0
    assert torch.equal(m(x2, mask)["logits"], before)


def test_flex_moe_trains_the_generalised_router_on_complete_stays_first(monkeypatch):
    table = make_table(400, seed=1, dims=DIMS)[0]
    calls = []
    real = flex_module.train_module

    def spy(module, tr, va, cfg, modality_drop=0.0):
        calls.append((bool(tr.mask.all(axis=1).all()), len(tr), cfg.max_epochs))
        return real(module, tr, va, cfg, modality_drop)

    monkeypatch.setattr(flex_module, "train_module", spy)
    cfg = {"width": 8, "expert_hidden": 8, "max_epochs": 10, "patience": 2, "threads": 1}
    fitted = moe.fit_baseline(table, "mortality", "flex_moe", cfg)
    n_train = int(((table.split == "train") & table.mortality.notna()).sum())
    assert calls[0][0] and calls[0][1] < n_train and calls[0][2] == 1  # warm-up: complete only
    assert not calls[1][0] and calls[1][1] == n_train and calls[1][2] == 10
    assert "warmup" in fitted.history


# ---------------------------------------------------------------------------------------
# MedFuse
# ---------------------------------------------------------------------------------------
def test_medfuse_sequence_holds_only_the_present_modalities_in_order():
    m = module(MedFuse)
    x, mask = inputs()
    seq, lengths = m.sequence(x, mask)
    assert torch.equal(lengths, mask.sum(1).clamp(min=1))
    tok = m.encode(x)
    for r in range(len(mask)):
        present = torch.nonzero(mask[r]).squeeze(1)
        assert torch.allclose(seq[r, : len(present)], tok[r, present])
    assert torch.equal(seq[0, 0], m.empty) and lengths[0] == 1  # a stay with nothing


def test_medfuse_output_is_the_lstm_over_the_present_tokens_only():
    m = module(MedFuse)
    x, mask = inputs()
    logits = m(x, mask)["logits"]
    tok = m.encode(x)
    for r in range(len(mask)):
        present = torch.nonzero(mask[r]).squeeze(1)
        if len(present) == 0:
            continue
        out, _ = m.lstm(tok[r, present].unsqueeze(0))  # a sequence of len(present) tokens
        expect = m.head(out[0, -1]).squeeze() + m.logit_offset
        assert torch.allclose(logits[r], expect, atol=1e-5)
    x2 = {k: v.clone() for k, v in x.items()}
    for j, mod in enumerate(MODALITIES):  # altering what a stay lacks changes nothing
        x2[mod][~mask[:, j]] = 7.0
    assert torch.equal(m(x2, mask)["logits"], logits)


# ---------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    return make_table(2500, seed=4, dims={"ehr": 12, "notes": 24, "cxr": 40})[0]


@pytest.mark.parametrize("kind", PEER_KINDS)
def test_each_peer_fits_and_beats_chance_on_test(toy, kind):
    cfg = {"width": 32, "expert_hidden": 32, "max_epochs": 12, "patience": 4, "threads": 1}
    fitted = moe.fit_baseline(toy, "long_los", kind, cfg)
    p = fitted.predict_proba(toy)
    a = extract(toy, "long_los")
    test = (a.split == "test") & ~np.isnan(a.y)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    assert auroc(a.y[test], p[test]) > 0.65  # chance is 0.5; early fusion gets 0.71
    # hiding a modality by `drop` is what the robustness curves do: it must change things
    assert not np.allclose(fitted.predict_proba(toy, drop="ehr"), p)


def test_a_saved_peer_loads_back_to_the_same_predictions(toy, tmp_path):
    from moe.api import write_outputs
    from moe.baselines import load_baseline

    cfg = {"width": 16, "expert_hidden": 16, "max_epochs": 2, "patience": 1, "threads": 1}
    for kind in PEER_KINDS:
        fitted = moe.fit_baseline(toy, "mortality", kind, cfg)
        pred, _ = write_outputs(tmp_path / kind, fitted, toy, "mortality", n_boot=10)
        back = load_baseline(tmp_path / kind)
        assert back.kind == kind
        assert np.allclose(back.predict_proba(toy, drop="cxr"), fitted.predict_proba(toy, drop="cxr"))
        assert np.allclose(moe.api.predictions(back, toy, "mortality").y_prob, pred.y_prob)
