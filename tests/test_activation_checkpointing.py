"""Selective activation checkpointing: the backward pass recomputes a block's elementwise work
but none of its matrix products (counted at the ATen level), and the gradients are unchanged."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aunet.model import HierarchicalTransformer
from model_helpers import text_batch, tiny_args

MATMULS = {"mm", "addmm", "bmm"}


class OpCounter(TorchDispatchMode):
    """Counts every ATen op that runs while it is active, by name."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def backward_pass(mode, args, tokens, levels):
    torch.manual_seed(1)
    model = HierarchicalTransformer(args).train()
    model.set_activation_checkpointing(mode)
    with OpCounter() as forward:
        _, loss = model(tokens, levels, tokens.roll(-1, 1))
    with OpCounter() as backward:
        loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()], forward.counts, backward.counts


@pytest.mark.slow  # 7 s for its two cases: profiles forward and backward passes
@pytest.mark.parametrize("pooling", ["simple_indexed_matmul", "simple_repeat"])
def test_selective_checkpointing_recomputes_no_matmul_and_keeps_the_gradients(pooling):
    args = tiny_args(2, pooling)
    tokens, levels = text_batch(2, 64)
    loss0, grads0, fwd0, bwd0 = backward_pass(None, args, tokens, levels)
    loss_s, grads_s, _, bwd_s = backward_pass("selective", args, tokens, levels)
    loss_f, grads_f, _, bwd_f = backward_pass("full", args, tokens, levels)
    # The same ops on the same inputs, saved or recomputed: equal up to 1e-6 (no reassociation
    # happens; the tolerance only absorbs a different choice of CPU kernel for a recomputation).
    for loss, grads in ((loss_s, grads_s), (loss_f, grads_f)):
        torch.testing.assert_close(loss, loss0, rtol=0, atol=1e-6)
        for a, b in zip(grads, grads0):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)

    def matmuls(counts):
        return sum(counts[name] for name in MATMULS)

    assert matmuls(fwd0) > 0 and matmuls(bwd0) > 0
    # Full recomputation runs every block's products again in the backward pass ...
    assert matmuls(bwd_f) > matmuls(bwd0)
    # ... selective recomputation none of them: the backward has exactly the gradient products.
    assert matmuls(bwd_s) == matmuls(bwd0)
    # It does recompute: the elementwise work of the blocks (norms, RoPE, SiLU, gating) runs again.
    for op in ("silu", "rms_norm" if "rms_norm" in bwd_s else "mul"):
        assert bwd_s[op] > bwd0[op], op


def test_the_config_flag_means_selective():
    model = HierarchicalTransformer(tiny_args(1))
    model.set_activation_checkpointing(True)
    assert {m.checkpointing for m in model.modules() if hasattr(m, "checkpointing")} == {"selective"}
    model.set_activation_checkpointing(False)
    assert {m.checkpointing for m in model.modules() if hasattr(m, "checkpointing")} == {None}
    with pytest.raises(ValueError, match="'some'"):
        model.set_activation_checkpointing("some")


@pytest.mark.slow  # 6 s: inductor compiles the blocks
def test_selective_checkpointing_of_compiled_blocks_keeps_the_gradients():
    """With `distributed.compile` each block's forward is compiled and runs inside the
    checkpoint; forward, recomputation and gradients must still agree (aot_eager: the graph
    dynamo and AOTAutograd capture, run without inductor's code generation)."""
    from aunet.model.compile import compile_blocks

    args = tiny_args(1)
    tokens, levels = text_batch(1, 64)
    results = []
    for mode, compiled in ((None, False), ("selective", True)):
        torch.manual_seed(1)
        model = HierarchicalTransformer(args).train()
        model.set_activation_checkpointing(mode)
        if compiled:
            compile_blocks(model, "aot_eager")
        for _ in range(2):  # the second step runs the cached graph
            model.zero_grad(set_to_none=True)
            _, loss = model(tokens, levels, tokens.roll(-1, 1))
            loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss0, grads0), (loss1, grads1) = results
    # The same ops, traced or not: 1e-6 absorbs a different op order inside the captured graph.
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=1e-6)
    for a, b in zip(grads1, grads0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
