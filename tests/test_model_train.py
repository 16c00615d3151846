"""Training behaviour on the CPU: loss, bf16 autocast, the level head, bits per byte."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aunet.config import ModelArgs, load_config
from aunet.model.flops import param_count
from aunet.model import HierarchicalTransformer, bpb, byte_nats
from model_helpers import POOLING_TYPES, text_batch, tiny_args

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("L", [1, 2])
def test_loss_falls_on_a_repeated_text(L):
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(L, dimensions=[32 * 2**i for i in range(L + 1)]))
    tokens, levels = text_batch(L, 97, batch=4)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        _, loss = model(inputs, levels[:, :-1], targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.0
    assert losses[-1] < 1.0, losses[::8]


@pytest.mark.parametrize("pooling_type", POOLING_TYPES)
def test_shapes_and_dtypes_under_bf16_autocast(pooling_type):
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(2, pooling_type, max_seqlens=[-1, 20, 10], lambda_level=0.3))
    tokens, levels = text_batch(2, 48, batch=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(tokens, levels, tokens, levels)
    assert logits.shape == (3, 48, 258) and logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and loss.shape == () and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        ref, _ = model(tokens, levels)
    diff = (logits.float() - ref).abs()  # bf16 keeps ~3 significant digits, logits are O(1)
    assert diff.mean() < 0.02 and diff.max() < 0.3


def test_level_head_adds_its_weighted_loss():
    torch.manual_seed(0)
    args = tiny_args(2, lambda_level=0.5)
    model = HierarchicalTransformer(args)
    tokens, levels = text_batch(2, 40)
    inputs, targets, target_levels = tokens[:, :-1], tokens[:, 1:], levels[:, 1:]
    logits, loss = model(inputs, levels[:, :-1], targets, target_levels)
    h = model.hidden(inputs, levels[:, :-1])
    level_logits = model.level_logits(h, targets)
    assert level_logits.shape == (2, 39, 3)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    level_ce = F.cross_entropy(level_logits.flatten(0, 1), target_levels.flatten())
    torch.testing.assert_close(loss, ce + 0.5 * level_ce)
    with pytest.raises(ValueError, match="target_levels"):
        model(inputs, levels[:, :-1], targets)


def test_ignored_targets_do_not_count():
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(1, lambda_level=0.1))
    tokens, levels = text_batch(1, 30, batch=1)
    targets = tokens.clone()
    targets[:, 10:] = -100
    logits, loss = model(tokens, levels, targets, levels)
    level_logits = model.level_logits(model.hidden(tokens, levels), targets)
    want = F.cross_entropy(logits[0, :10], tokens[0, :10]) + 0.1 * F.cross_entropy(level_logits[0, :10], levels[0, :10])
    torch.testing.assert_close(loss, want)


def test_bpb_counts_byte_targets_only():
    logits = torch.randn(2, 5, 258)
    targets = torch.tensor([[1, 2, 256, 257, 3], [4, -100, 5, 6, 257]])
    nats, count = byte_nats(logits, targets)
    logp = logits.log_softmax(-1)
    keep = [(0, 0), (0, 1), (0, 4), (1, 0), (1, 2), (1, 3)]
    want = -sum(logp[b, t, targets[b, t]] for b, t in keep)
    assert count.item() == 6
    torch.testing.assert_close(nats, want)
    torch.testing.assert_close(bpb(logits, targets), want / 6 / math.log(2))
    uniform = torch.zeros(1, 4, 258)
    assert bpb(uniform, torch.tensor([[0, 1, 2, 3]])).item() == pytest.approx(math.log2(258))


def test_bad_inputs_fail_clearly():
    model = HierarchicalTransformer(tiny_args(1, max_seqlens=[32, -1]))
    tokens = torch.randint(0, 256, (1, 20))
    with pytest.raises(ValueError, match="levels must have the shape"):
        model(tokens)
    with pytest.raises(ValueError, match="max_seqlens"):
        model(torch.randint(0, 256, (1, 40)), torch.zeros(1, 40, dtype=torch.long))


def test_levels_above_the_model_depth_pool_at_every_stage():
    torch.manual_seed(0)
    model = HierarchicalTransformer(tiny_args(1)).eval()
    tokens = torch.randint(0, 256, (2, 30))
    levels = torch.randint(0, 4, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, levels)[0], model(tokens, levels.clamp(max=1))[0])


def test_aunet2_is_in_the_1b_class_and_aunet3_in_the_2b_class():
    aunet2, _ = load_config(CONFIGS / "aunet2_1b.yaml")
    aunet3, _ = load_config(CONFIGS / "aunet3_1b.yaml")
    n2, n3 = param_count(aunet2.model), param_count(aunet3.model)
    assert n2 == 1_324_203_008 and 1.0e9 <= n2 < 1.5e9
    assert n3 == 2_503_624_064 and 2.0e9 <= n3 < 3.0e9
    assert ModelArgs() == aunet2.model  # the defaults are AU-Net-2


def test_activation_checkpointing_gives_the_same_loss_and_gradients(monkeypatch):
    import torch

    from aunet.config import ModelArgs
    from aunet.model import HierarchicalTransformer

    args = ModelArgs(dimensions=[32, 48], layers=[1, 2], head_dims=[16, 16], residuals=[True], sliding_windows=[64, 64], max_seqlens=[-1, 32])
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (2, 64))
    levels = (torch.rand(2, 64) < 0.2).long()
    from aunet.model.layers import Block

    count = [0]
    forward = Block.forward

    def counted(self, *a, **k):  # recomputation does not fire forward hooks, so count here
        count[0] += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(Block, "forward", counted)
    grads, calls = [], []
    for enabled in (False, True):
        torch.manual_seed(1)
        model = HierarchicalTransformer(args)
        model.set_activation_checkpointing(enabled)
        count[0] = 0
        _, loss = model(tokens, levels, tokens.roll(-1, 1))
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        calls.append(count[0])
    assert calls[1] == 2 * calls[0]  # every block ran again in the backward pass
    assert grads[0][0] == grads[1][0]  # the same forward (recomputation changes only the backward): exact
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))
