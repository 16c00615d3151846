"""Causality: logits at t depend only on tokens and levels at positions <= t (SPEC section 4)."""

from __future__ import annotations

import pytest
import torch

from aunet.model import HierarchicalTransformer
from model_helpers import POOLING_COMBOS, POOLING_TYPES, text_batch, tiny_args

T = 40


def random_inputs(gen: torch.Generator, L: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 258, (batch, T), generator=gen)
    levels = torch.randint(0, L + 1, (batch, T), generator=gen)
    return tokens, levels


def assert_causal(model: HierarchicalTransformer, tokens: torch.Tensor, levels: torch.Tensor,
                  gen: torch.Generator) -> None:
    """For every t, rewrite every token and level after t: logits up to t must not move."""
    L = model.n_levels
    with torch.no_grad():
        base, _ = model(tokens, levels)
        for t in range(T - 1):
            tok, lev = tokens.clone(), levels.clone()
            tok[:, t + 1:] = torch.randint(0, 258, tok[:, t + 1:].shape, generator=gen)
            lev[:, t + 1:] = torch.randint(0, L + 1, lev[:, t + 1:].shape, generator=gen)
            out, _ = model(tok, lev)
            diff = (out[:, : t + 1] - base[:, : t + 1]).abs().max().item()
            assert diff <= 1e-5, f"t={t}: logits at positions <= t changed by {diff}"


@pytest.mark.parametrize("pooling_type", POOLING_TYPES + POOLING_COMBOS)
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("truncate", [False, True], ids=["full", "truncated"])
def test_future_tokens_and_levels_never_change_past_logits(pooling_type, L, truncate):
    gen = torch.Generator().manual_seed(L * 100 + len(pooling_type) + truncate)
    torch.manual_seed(0)
    # Truncated: about T * L / (L + 1) positions pool at stage 1, far more than are kept.
    max_seqlens = [-1] + ([max(3, T // 4 >> i) for i in range(L)] if truncate else [-1] * L)
    model = HierarchicalTransformer(tiny_args(L, pooling_type, max_seqlens=max_seqlens)).eval()
    tokens, levels = random_inputs(gen, L)
    assert_causal(model, tokens, levels, gen)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_causal_on_segmenter_levels(L):
    gen = torch.Generator().manual_seed(L)
    model = HierarchicalTransformer(tiny_args(L, sliding_windows=[-1] * (L + 1))).eval()
    tokens, levels = text_batch(L, T)
    assert_causal(model, tokens, levels, gen)


def test_flat_model_is_causal():
    gen = torch.Generator().manual_seed(5)
    model = HierarchicalTransformer(tiny_args(0)).eval()
    tokens, levels = random_inputs(gen, 0)
    assert_causal(model, tokens, levels, gen)


@pytest.mark.parametrize("L", [1, 2])
def test_gradients_from_position_t_reach_no_later_input(L):
    """The same invariant through autograd: d logits[t] / d embedding[s] = 0 for all s > t."""
    torch.manual_seed(1)
    model = HierarchicalTransformer(tiny_args(L, max_seqlens=[-1] + [12] * L))
    tokens, levels = random_inputs(torch.Generator().manual_seed(2), L, batch=1)
    emb = model.tok_embeddings(tokens).detach().requires_grad_()
    model.tok_embeddings.forward = lambda _: emb
    logits, _ = model(tokens, levels)
    for t in (0, 5, T // 2, T - 2):
        (grad,) = torch.autograd.grad(logits[0, t].sum(), emb, retain_graph=True)
        # Exact 0, not small: a later position reaches logits[t] only through attention
        # probabilities that are exactly 0 (masked) and pooling weights that are exactly 0.
        assert grad[0, t + 1:].abs().max() == 0
        assert grad[0, : t + 1].abs().sum() > 0


@pytest.mark.parametrize("pooling_type", POOLING_TYPES)
def test_the_past_does_change_logits(pooling_type):
    """The check above can fail: a change at t moves the logits at t and after."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    model = HierarchicalTransformer(tiny_args(2, pooling_type)).eval()
    tokens, levels = random_inputs(gen, 2)
    with torch.no_grad():
        base, _ = model(tokens, levels)
        tok = tokens.clone()
        tok[:, 10] = (tok[:, 10] + 1) % 256
        out, _ = model(tok, levels)
        lev = levels.clone()
        lev[:, 10] = (lev[:, 10] + 1) % 3
        out_lev, _ = model(tokens, lev)
    # Exact: one process, the same shapes and code, and a change at position 10 reaches the
    # earlier positions' sums only through weights of exactly 0 (masked), so any difference
    # there at all is a leak from the future.
    assert torch.equal(out[:, :10], base[:, :10])
    assert (out[:, 10] - base[:, 10]).abs().max() > 1e-4
    assert (out_lev[:, 10:] - base[:, 10:]).abs().max() > 1e-4
