"""Blocks: sliding-window attention routes, RoPE, SwiGLU sizes, initialisation."""

from __future__ import annotations

import math
import os

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
    # The fused projections: each part (the reference's wq, wk, wv; w1, w3) has its own std.
    for part in block.attention.wqkv.weight.split(block.attention.split):
        assert std(part) == pytest.approx(512**-0.5, rel=0.05)
    assert std(block.attention.wo.weight) == pytest.approx(512**-0.5, rel=0.05)  # init_std_factor disabled
    hidden = args.block.ffn_hidden(512)
    assert block.feed_forward.w13.weight.shape == (2 * hidden, 512)
    for part in block.feed_forward.w13.weight.chunk(2):
        assert std(part) == pytest.approx(512**-0.5, rel=0.05)
        assert part.abs().max() <= 3 * 512**-0.5
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
        for part in block.attention.wqkv.weight.split(block.attention.split):
            assert part.std().item() == pytest.approx(512**-0.5, rel=0.05)
        assert block.feed_forward.w13.weight.std().item() == pytest.approx(512**-0.5, rel=0.05)


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


# ---------------------------------------------------------------------------------------------
# Attention routes: FlexAttention (the CUDA route) against the SDPA routes, run on the CPU.
#
# On the CPU, FlexAttention runs PyTorch's unfused reference (the fused kernels are CUDA's,
# through torch.compile), so these tests pin down what the CUDA route is asked to compute
# (mask_mod, block mask, grouped-query heads, layouts), not the Triton kernel's arithmetic.

def flex_windows(T):
    return sorted({1, 3, T // 4, T - 1, T, T + 5, -1})


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("T", [37, 64, 200, 300])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_flex_route_equals_banded_route_and_the_definition(T, kv_heads):
    gen = torch.Generator().manual_seed(T * kv_heads)
    q = torch.randn(2, 4, T, 16, generator=gen)
    k = torch.randn(2, kv_heads, T, 16, generator=gen)
    v = torch.randn(2, kv_heads, T, 16, generator=gen)
    for window in flex_windows(T):
        flex = causal_attention(q, k, v, window, impl="flex")
        torch.testing.assert_close(flex, causal_attention(q, k, v, window, impl="banded"))
        torch.testing.assert_close(flex, causal_attention(q, k, v, window, impl="masked"))
        torch.testing.assert_close(flex, attention_by_definition(q.double(), k.double(), v.double(), window).float())


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("T", [37, 200])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_flex_route_gradients_equal_banded_route_and_the_definition(T, kv_heads, monkeypatch):
    """PyTorch refuses FlexAttention inputs that require grad on the CPU (a device check in
    `flex_attention`); the autograd formula behind it runs on the CPU all the same, so the
    check is lifted here and gradients go through the flex route unchanged."""
    import torch.nn.attention.flex_attention as flex_module

    monkeypatch.setattr(flex_module, "_validate_device", lambda *tensors: None)
    gen = torch.Generator().manual_seed(T + kv_heads)
    # As Attention.forward passes them: [B, T, H, D] storage seen as [B, H, T, D].
    q = torch.randn(2, T, 4, 16, generator=gen).transpose(1, 2).requires_grad_()
    k = torch.randn(2, T, kv_heads, 16, generator=gen).transpose(1, 2).requires_grad_()
    v = torch.randn(2, T, kv_heads, 16, generator=gen).transpose(1, 2).requires_grad_()
    grad_out = torch.randn(2, 4, T, 16, generator=gen)
    for window in flex_windows(T):
        want_banded = torch.autograd.grad(causal_attention(q, k, v, window, impl="banded"), (q, k, v), grad_out)
        qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
        want_def = torch.autograd.grad(attention_by_definition(qd, kd, vd, window), (qd, kd, vd), grad_out.double())
        got = torch.autograd.grad(causal_attention(q, k, v, window, impl="flex"), (q, k, v), grad_out)
        for g, b, d in zip(got, want_banded, want_def):
            torch.testing.assert_close(g, b)
            torch.testing.assert_close(g, d.float())


@pytest.mark.parametrize("T,window", [(300, 1), (300, 40), (512, 128), (512, 200), (257, 256), (300, -1), (300, 300)])
def test_flex_block_mask_is_the_window_band_at_block_level(T, window):
    """The mask_mod is the band of causal_attention's definition, and the block mask lists
    exactly the 128 x 128 tiles that hold an allowed (query, key) pair: none missing (which
    would drop keys) and none extra (which would waste the sparsity)."""
    from torch.nn.attention.flex_attention import create_mask

    from aunet.model.attention import FLEX_BLOCK, window_block_mask, window_mask_mod

    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    band = (s <= t) & ((t - s < window) if 0 < window < T else True)
    w = window if 0 < window < T else 0
    assert torch.equal(create_mask(window_mask_mod(w), 1, 1, T, T, device="cpu")[0, 0], band)
    n = -(-T // FLEX_BLOCK)
    padded = F.pad(band, (0, n * FLEX_BLOCK - T, 0, n * FLEX_BLOCK - T))
    tiles = padded.view(n, FLEX_BLOCK, n, FLEX_BLOCK).any(3).any(1)
    mask = window_block_mask(T, window, torch.device("cpu"))
    assert torch.equal(mask.to_dense()[0, 0].bool(), tiles)
    assert window_block_mask(T, window, torch.device("cpu")) is mask  # cached
    if w == 0:
        assert window_block_mask(T, -1, torch.device("cpu")) is window_block_mask(T, T + 3, torch.device("cpu"))


@pytest.mark.parametrize("T,window", [(37, 8), (64, 16), (20, 12), (16, 16), (50, -1), (300, 40), (300, 1)])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_auto_on_the_cpu_takes_the_sdpa_routes(T, window, kv_heads, monkeypatch):
    import aunet.model.attention as attention

    def no_flex(*args):
        raise AssertionError("the flex route ran on the CPU")

    monkeypatch.setattr(attention, "_flex_attention", no_flex)
    gen = torch.Generator().manual_seed(T)
    q = torch.randn(2, 4, T, 16, generator=gen)
    k = torch.randn(2, kv_heads, T, 16, generator=gen)
    v = torch.randn(2, kv_heads, T, 16, generator=gen)
    # Exact: "auto" must run the very same SDPA call on the same tensors in this process.
    assert torch.equal(causal_attention(q, k, v, window), causal_attention(q, k, v, window, impl="sdpa"))
    assert attention._resolve(q, k, window, "auto") == "sdpa"


def test_auto_on_cuda_takes_flex_for_short_windows_and_flash_otherwise():
    """The choice made for CUDA tensors, read off fake (shape-only) CUDA tensors: this machine
    has no GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from aunet.model.attention import _resolve

    with FakeTensorMode():
        q = torch.empty(2, 8, 1024, 64, device="cuda")
        k = torch.empty(2, 2, 1024, 64, device="cuda")
        assert q.device.type == "cuda"
        assert _resolve(q, k, 512, "auto") == "flex"
        assert _resolve(q, q, 1, "auto") == "flex"
        assert _resolve(q.bfloat16(), k.bfloat16(), 1023, "auto") == "flex"
        # Window covering the sequence: plain causal SDPA (flash).
        assert _resolve(q, k, 1024, "auto") == "sdpa"
        assert _resolve(q, k, -1, "auto") == "sdpa"
        # Shapes the fused kernel does not take: the SDPA routes.
        assert _resolve(q[..., :8], k[..., :8], 512, "auto") == "sdpa"  # head_dim < 16
        assert _resolve(q[:, :, :100], k[:, :, :100], 50, "auto") == "sdpa"  # under one block
        assert _resolve(q[:, :6], k, 512, "auto") == "sdpa"  # 3 query heads per key head
        assert _resolve(q.double(), k.double(), 512, "auto") == "sdpa"
        # Explicit choices are kept.
        assert _resolve(q, k, 512, "sdpa") == "sdpa"
        assert _resolve(q, k, 1024, "flex") == "flex"
    with pytest.raises(ValueError, match="expected one of"):
        causal_attention(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8), 2, impl="fast")


@pytest.mark.slow  # 2 s: a Python subprocess per setting
def test_environment_variable_forces_the_route_of_auto(monkeypatch):
    import subprocess
    import sys

    import aunet.model.attention as attention

    # The variable is read at import: one fresh interpreter imports the module twice.
    code = ("import importlib, os, aunet.model.attention as a; print(a._FORCED)\n"
            "os.environ['AUNET_ATTENTION'] = 'fast'\n"
            "try:\n    importlib.reload(a)\nexcept ValueError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "AUNET_ATTENTION": " SDPA "},
                         capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == ["sdpa", "AUNET_ATTENTION='fast': expected one of auto, sdpa, banded, masked, flex"]
    # What a forced route does to "auto" (set in-process: the variable is read at import).
    calls = []
    monkeypatch.setattr(attention, "_FORCED", "banded")
    monkeypatch.setattr(attention, "_banded_attention", lambda q, k, v, w: calls.append(w) or q)
    q = torch.randn(1, 2, 40, 8)
    causal_attention(q, q, q, 30)  # "sdpa" would use one mask here (T < 2 * window)
    assert calls == [30]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_route_traces_into_one_graph():
    """No host syncs or graph breaks on the CUDA route either: the flex route, block mask
    included, compiles with fullgraph=True (here with the eager backend, on the CPU)."""
    import functools

    flex = functools.partial(causal_attention, impl="flex")
    compiled = torch.compile(flex, fullgraph=True, backend="eager", dynamic=False)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 300, 4, 16, generator=gen).transpose(1, 2)
    kv = torch.randn(2, 300, 2, 16, generator=gen).transpose(1, 2)
    got = compiled(q, kv, kv, 40)
    torch.testing.assert_close(got, flex(q, kv, kv, 40))
    torch.testing.assert_close(got, causal_attention(q, kv, kv, 40, impl="banded"))
