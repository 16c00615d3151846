"""Pooling and upsampling against direct, per-position implementations of SPEC section 4."""

from __future__ import annotations

import pytest
import torch

from aunet.config import MAX_OFFSET, Pooling
from aunet.model import HierarchicalTransformer
from aunet.model.pooling import Transition, build_transition, gather_rows, pool_index
from model_helpers import POOLING_COMBOS, POOLING_TYPES, indexed_up_all_maps, indexed_up_loop, tiny_args


def naive_pool(levels: list[int], stage: int, out_len: int):
    pooled = [j for j, m in enumerate(levels) if m > stage][:out_len]
    idx = pooled + [len(levels) - 1] * (out_len - len(pooled))
    up_k = [max(k for k, p in enumerate(pooled) if p <= j) for j in range(len(levels))]
    offset = [j - pooled[k] for j, k in enumerate(up_k)]
    nxt = [levels[p] for p in pooled] + [0] * (out_len - len(pooled))
    return idx, [k < len(pooled) for k in range(out_len)], up_k, offset, nxt


@pytest.mark.parametrize("stage,out_len", [(0, 60), (0, 7), (1, 30), (1, 3), (2, 1)])
def test_pool_index_matches_the_definition(stage, out_len):
    gen = torch.Generator().manual_seed(stage * 10 + out_len)
    levels = torch.randint(0, 4, (3, 60), generator=gen)
    levels[:, 0] = 3
    got = pool_index(levels, stage, out_len)
    for b in range(3):
        idx, valid, up_k, offset, nxt = naive_pool(levels[b].tolist(), stage, out_len)
        assert got.idx[b].tolist() == idx
        assert got.valid[b].tolist() == valid
        assert got.up_k[b].tolist() == up_k
        assert got.offset[b].tolist() == offset
        assert got.levels[b].tolist() == nxt


def naive_up(tr: Transition, options: frozenset[str], z: torch.Tensor, up_k: list[int], offset: list[int]) -> torch.Tensor:
    """Up_i(z[k], o) one position at a time, in the reference's order of operations."""
    non_param, indexed_matmul = "non_param" in options, "indexed_matmul" in options

    def fold(v):  # the non-parametric up: average each group of d_out / d_in features
        return v.view(tr.d_in, -1).mean(-1)

    rows = []
    for k, o in zip(up_k, offset):
        v = z[k]
        if not non_param:
            v = tr.up_norm(v)
        shared = fold if non_param else tr.trans_up
        if indexed_matmul:
            n = tr.indexed_norm(z[k]) if non_param else v
            rows.append(shared(v) + tr.indexed_linear.weight[o % MAX_OFFSET] @ n)
        elif "repeat" in options:
            rows.append(shared(v + tr.pos_encoding.weight[o % MAX_OFFSET]))
        else:
            rows.append(shared(v) if o == 0 else torch.zeros(tr.d_in))
    return torch.stack(rows)


@pytest.mark.parametrize("pooling_type", POOLING_TYPES + POOLING_COMBOS)
def test_upsampling_matches_the_per_position_definition(pooling_type):
    torch.manual_seed(0)
    tr = build_transition(pooling_type, 8, 16, eps=1e-5)
    levels = torch.zeros(2, 50, dtype=torch.long)
    levels[:, [0, 3, 4, 30]] = 1  # a 26-byte segment: offsets past 16 wrap around
    levels[1, 45] = 1
    index = pool_index(levels, 0, 4)  # the pooled position 45 of row 1 is cut off
    z = torch.randn(2, 4, 16)
    got = tr.up(z, index)
    for b in range(2):
        want = naive_up(tr, Pooling.parse(pooling_type).options, z[b], index.up_k[b].tolist(), index.offset[b].tolist())
        torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)


def test_multilinear_upsampling_values_and_gradients_match_the_offset_loop():
    torch.manual_seed(0)
    # float64, so that the two summation orders agree to rounding.
    tr = build_transition("simple_indexed_matmul", 12, 20, eps=1e-5).double()
    gen = torch.Generator().manual_seed(1)
    levels = (torch.rand(3, 200, generator=gen) < 0.08).long()
    levels[:, 0] = 1
    index = pool_index(levels, 0, 24)
    assert index.offset.max() >= MAX_OFFSET  # wrap-around is exercised
    z = torch.randn(3, 24, 20, dtype=torch.float64, requires_grad=True)
    wrt = [z, tr.up_norm.weight, tr.trans_up.weight, tr.indexed_linear.weight]
    fast = tr.up(z, index)
    grads_fast = torch.autograd.grad((fast * torch.linspace(-1, 1, 12, dtype=torch.float64)).sum(), wrt)

    n = gather_rows(tr.up_norm(z), index.up_k)
    slow = tr.trans_up(n) + indexed_up_loop(n, tr.indexed_linear.weight, index.offset)
    grads_slow = torch.autograd.grad((slow * torch.linspace(-1, 1, 12, dtype=torch.float64)).sum(), wrt)
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def segment_levels(kind: str, B: int, T: int) -> torch.Tensor:
    """Level masks whose segment lengths stress the prefix bound of each offset map."""
    gen = torch.Generator().manual_seed(len(kind))
    levels = torch.zeros(B, T, dtype=torch.long)
    if kind == "random":
        levels = (torch.rand(B, T, generator=gen) < 0.3).long()
    elif kind == "singletons":  # every position pooled: K = T, map 0 only
        levels[:] = 1
    elif kind == "one long and many short":  # one segment wraps past 16 several times
        levels[:, 60:] = 1
        levels[1, 60:] = (torch.rand(T - 60, generator=gen) < 0.5).long()
    elif kind == "exactly 16":  # every map used by every vector
        levels[:, ::16] = 1
    levels[:, 0] = 1
    return levels


@pytest.mark.parametrize("kind,K", [("random", 40), ("random", 8), ("singletons", 100), ("one long and many short", 30),
                                    ("one long and many short", 200), ("exactly 16", 7), ("none pooled", 5)])
def test_used_maps_only_equal_all_maps(kind, K):
    """The upsampling computes each offset map only on the sorted prefix of coarse vectors that
    use it; it must equal applying all 16 maps to every vector (the previous code), values and
    gradients, including truncation (K below the pooled count: the tail's segment runs to the
    end) and wrap-around. float64: the two compute the same products with different matmul
    shapes, so they agree to rounding (1e-12)."""
    torch.manual_seed(0)
    tr = build_transition("simple_indexed_matmul", 12, 20, eps=1e-5).double()
    B, T = 3, 200
    index = pool_index(segment_levels(kind, B, T), 0, K)
    z = torch.randn(B, K, 20, dtype=torch.float64, requires_grad=True)
    wrt = [z, tr.up_norm.weight, tr.trans_up.weight, tr.indexed_linear.weight]
    probe = torch.randn(B, T, 12, dtype=torch.float64)
    fast = tr.up(z, index)
    grads_fast = torch.autograd.grad((fast * probe).sum(), wrt)
    n = tr.up_norm(z)
    slow = gather_rows(tr.trans_up(n), index.up_k) + indexed_up_all_maps(n, tr.indexed_linear.weight, index.up_k, index.offset)
    grads_slow = torch.autograd.grad((slow * probe).sum(), wrt)
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-10)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_decoding_step_takes_any_offset():
    """`up_step` (one position per row, offsets up to any value) gathers each row's map: equal
    to the all-maps computation, in float32 within 1e-5 (different reduction order)."""
    torch.manual_seed(0)
    for pooling_type in ("simple_indexed_matmul", "simple_non_param_indexed_matmul"):
        tr = build_transition(pooling_type, 8, 16, eps=1e-5)
        z = torch.randn(4, 1, 16)
        offset = torch.tensor([[0], [5], [17], [40]])
        got = tr.up_step(z, offset)
        zero = torch.zeros(4, 1, dtype=torch.long)
        n = tr.indexed_input(z, tr.norm_up(z))
        want = tr.project_up(tr.norm_up(z)) + indexed_up_all_maps(n, tr.indexed_linear.weight, zero, offset)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_non_parametric_down_is_the_reference_interpolation():
    torch.manual_seed(0)
    d_in, r = 6, 3
    tr = build_transition("simple_non_param", d_in, d_in * r, eps=1e-5)
    assert not list(tr.parameters())
    levels = torch.tensor([[1, 0, 1, 1, 0]])
    index = pool_index(levels, 0, 3)
    x = torch.randn(1, 5, d_in)
    got = tr.down(x, index)
    # The reference: x[..., expand_idx] * w + x[..., expand_idx].roll(r) * (1 - w).
    expand_idx = torch.arange(d_in).repeat_interleave(r)
    w = (torch.arange(1, r + 1) / r).repeat(d_in)
    xs = x[:, [0, 2, 3]]
    want = xs[..., expand_idx] * w + xs[..., expand_idx].roll(r, -1) * (1 - w)
    torch.testing.assert_close(got, want)
    # Up averages the copies back: down then up is not the identity, but a constant vector is kept.
    const = torch.full((1, 3, d_in * r), 2.0)
    assert torch.allclose(tr.up(const, index)[0, [0, 2, 3]], torch.full((3, d_in), 2.0))


def test_pooled_sequence_is_padded_to_a_static_length():
    model = HierarchicalTransformer(tiny_args(2, max_seqlens=[-1, 12, 5]))
    seen = []
    model.trunk.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    for density in (0.05, 0.9):
        levels = (torch.rand(2, 40) < density).long() * 2
        model(torch.randint(0, 256, (2, 40)), levels)
    assert seen == [torch.Size([2, 5, 64])] * 2


@pytest.mark.slow  # 2 s: traces the whole forward with dynamo
def test_whole_forward_traces_into_one_graph():
    """No data-dependent shapes or host syncs anywhere in the forward pass: torch.compile
    captures it as one graph (fullgraph fails on either). The reference's per-offset loop
    does not."""
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(2, max_seqlens=[-1, 16, 8], lambda_level=0.5))
    tokens = torch.randint(0, 258, (2, 40))
    levels = torch.randint(0, 3, (2, 40))
    compiled = torch.compile(model, fullgraph=True, backend="eager", dynamic=False)
    out, loss = compiled(tokens, levels, tokens, levels)
    ref, ref_loss = model(tokens, levels, tokens, levels)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(loss, ref_loss)
    loop = torch.compile(indexed_up_loop, fullgraph=True, backend="eager", dynamic=False)
    with pytest.raises(Exception):
        loop(torch.randn(2, 10, 8), torch.randn(16, 4, 8), torch.randint(0, 20, (2, 10)))


PARAMETER_NAMES = {
    "simple": ["down_norm.weight", "trans_down.weight", "up_norm.weight", "trans_up.weight"],
    "simple_non_param": [],
    "simple_repeat": ["down_norm.weight", "trans_down.weight", "up_norm.weight", "trans_up.weight",
                      "pos_encoding.weight"],
    "simple_non_param_repeat": ["pos_encoding.weight"],
    "simple_indexed_matmul": ["down_norm.weight", "trans_down.weight", "up_norm.weight", "trans_up.weight",
                              "indexed_linear.weight"],
    "simple_non_param_indexed_matmul": ["indexed_linear.weight", "indexed_norm.weight"],
}


def test_every_spelling_the_config_accepts_has_one_registered_class():
    """Each pooling type is one registered class; every name `pooling_type` accepts (options in
    any order, repeat beside indexed_matmul) finds the class of its canonical spelling."""
    import itertools

    from aunet.config.model import POOLING_OPTIONS
    from aunet.model.pooling import pooling_class, registered_types

    assert registered_types() == sorted(PARAMETER_NAMES)
    for r in range(len(POOLING_OPTIONS) + 1):
        for options in itertools.permutations(POOLING_OPTIONS, r):
            name = "_".join(["simple", *options])
            assert pooling_class(name) is pooling_class(Pooling.parse(name).name), name
    assert pooling_class("simple_repeat_indexed_matmul") is pooling_class("simple_indexed_matmul")


@pytest.mark.parametrize("pooling_type", sorted(PARAMETER_NAMES))
def test_parameter_names_and_order_are_the_checkpoint_layout(pooling_type):
    """State-dict names and order (ZeRO-3 checkpoints flatten parameters in order) are those of
    existing checkpoints and HF exports."""
    tr = build_transition(pooling_type, 8, 16, eps=1e-5)
    assert [name for name, _ in tr.named_parameters()] == PARAMETER_NAMES[pooling_type]
