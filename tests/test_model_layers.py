"""Blocks: sliding-window attention routes, RoPE, SwiGLU sizes, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aunet.config import BlockArgs
from aunet.model import HierarchicalTransformer
from aunet.model.layers import apply_rope, causal_attention, rope_tables
from model_helpers import tiny_args


def attention_by_definition(q, k, v, window):
    """Softmax over keys s with t - window < s <= t, written out."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    T = q.shape[-2]
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    allowed = (s <= t) & ((t - s < window) if window > 0 else True)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("T,window", [(37, 8), (64, 16), (20, 8), (20, 12), (16, 16), (16, 40), (50, -1), (33, 1)])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_every_attention_route_is_windowed_causal_attention(T, window, kv_heads):
    gen = torch.Generator().manual_seed(T + window)
    q = torch.randn(2, 4, T, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(2, kv_heads, T, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(2, kv_heads, T, 8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(causal_attention(q, k, v, window), attention_by_definition(q, k, v, window))


def test_rope_rotates_adjacent_pairs_like_complex_multiplication():
    T, D, theta = 12, 8, 500000.0
    x = torch.randn(1, T, 2, D, dtype=torch.float64)
    cos, sin = rope_tables(T, D, theta, x.device)
    got = apply_rope(x, cos, sin)
    freqs = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freqs
    want = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())
                              * torch.polar(torch.ones_like(angle), angle)[:, None]).flatten(-2)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # Relative: the score of (t, s) depends on t - s only.
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    rq = apply_rope(q.expand(1, T, 1, D), cos, sin)[0, :, 0]
    rk = apply_rope(k.expand(1, T, 1, D), cos, sin)[0, :, 0]
    assert torch.allclose(rq[5] @ rk[2], rq[9] @ rk[6], atol=1e-5)


@pytest.mark.parametrize("dim,hidden", [(512, 1536), (2048, 5632), (3456, 9216), (768, 2048)])
def test_swiglu_hidden_size_is_8_thirds_rounded_up(dim, hidden):
    assert BlockArgs(multiple_of=256).ffn_hidden(dim) == hidden


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    args = tiny_args(1, dimensions=[256, 512], head_dims=[64, 64], layers=[1, 4])
    model = HierarchicalTransformer(args)

    def std(w):
        return w.detach().float().std().item()

    # Truncated at 3 std, which shrinks the std by ~1.3%.
    assert std(model.tok_embeddings.weight) == pytest.approx(256**-0.5, rel=0.05)
    assert std(model.vocab.weight) == pytest.approx(256**-0.5, rel=0.05)
    assert model.tok_embeddings.weight.abs().max() <= 3 * 256**-0.5
    block = model.trunk.layers[3]
    assert std(block.attention.wq.weight) == pytest.approx(512**-0.5, rel=0.05)
    assert std(block.attention.wo.weight) == pytest.approx(512**-0.5, rel=0.05)  # init_std_factor disabled
    hidden = args.block.ffn_hidden(512)
    assert std(block.feed_forward.w2.weight) == pytest.approx(hidden**-0.5, rel=0.05)
    tr = model.transitions[0]
    assert std(tr.trans_down.weight) == pytest.approx(256**-0.5, rel=0.05)
    assert std(tr.trans_up.weight) == pytest.approx(512**-0.5, rel=0.05)
    assert std(tr.indexed_linear.weight) == pytest.approx(512**-0.5, rel=0.05)
    assert torch.equal(tr.up_norm.weight, torch.ones(512))


def test_current_depth_factor_shrinks_output_projections_per_layer():
    torch.manual_seed(0)
    args = tiny_args(1, dimensions=[256, 512], head_dims=[64, 64], layers=[1, 4],
                     block=BlockArgs(multiple_of=16, init_std_factor="current_depth"))
    model = HierarchicalTransformer(args)
    for depth, block in enumerate(model.trunk.layers):
        factor = (2 * (depth + 1)) ** 0.5
        assert block.attention.wo.weight.std().item() == pytest.approx(512**-0.5 / factor, rel=0.05)
        assert block.attention.wq.weight.std().item() == pytest.approx(512**-0.5, rel=0.05)


def test_init_weights_resets_every_parameter():
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(2, pooling_type="simple_repeat", lambda_level=0.1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    model.init_weights()
    assert all((p != 7.0).any() for p in model.parameters())


def test_meta_device_build_then_init():
    args = tiny_args(1)
    with torch.device("meta"):
        model = HierarchicalTransformer(args)
    model = model.to_empty(device="cpu")
    model.init_weights()
    logits, loss = model(torch.randint(0, 256, (1, 20)), torch.randint(0, 2, (1, 20)), torch.randint(0, 256, (1, 20)))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(math.log(258), abs=1.5)


def test_sdpa_fast_path_is_used_when_the_window_covers_the_sequence(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask is None, is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q = torch.randn(1, 2, 16, 8)
    causal_attention(q, q, q, 16)
    causal_attention(q, q, q, -1)
    assert calls == [(True, True), (True, True)]


@pytest.mark.parametrize("pooling_type", ["simple", "simple_repeat", "simple_indexed_matmul",
                                          "simple_non_param_indexed_matmul", "simple_non_param_repeat"])
def test_parameters_are_only_read_inside_their_modules_call(pooling_type):
    """What DeepSpeed ZeRO-3 needs: a module's partitioned weights are gathered when the module
    is called. Simulated here: every weight is empty except during its own module's forward."""
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(2, pooling_type, lambda_level=0.5)).eval()
    tokens, levels = torch.randint(0, 256, (2, 40)), torch.randint(0, 3, (2, 40))
    with torch.no_grad():
        want, _ = model(tokens, levels)
    real = {p: p.data for p in model.parameters()}
    owners = [m for m in model.modules() if list(m.parameters(recurse=False))]

    def gather(module, *_):
        for p in module.parameters(recurse=False):
            p.data = real[p]

    def release(module, *_):
        for p in module.parameters(recurse=False):
            p.data = torch.empty(0)

    handles = [h for m in owners for h in (m.register_forward_pre_hook(gather), m.register_forward_hook(release))]
    try:
        for m in owners:
            release(m)
        with torch.no_grad():
            got, loss = model(tokens, levels, tokens, levels)
    finally:
        for h in handles:
            h.remove()
        for p, data in real.items():
            p.data = data
    torch.testing.assert_close(got, want)
    assert torch.isfinite(loss)
