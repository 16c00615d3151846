"""Parameter count and FLOPs estimates from the config alone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aunet.config import BlockArgs, load_config
from aunet.model.flops import DEFAULT_STAGE_FRACTIONS, flops_per_byte, mean_context, param_count, stage_positions
from aunet.model import HierarchicalTransformer
from model_helpers import POOLING_COMBOS, POOLING_TYPES, tiny_args

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("pooling_type", POOLING_TYPES + POOLING_COMBOS)
@pytest.mark.parametrize("L", [0, 1, 3])
def test_param_count_equals_the_built_model(pooling_type, L):
    args = tiny_args(L, pooling_type, lambda_level=0.2 if L else 0.0, head_dims=[8] * (L + 1),
                     block=BlockArgs(multiple_of=24, n_kv_heads=1, ffn_dim_multiplier=1.3))
    with torch.device("meta"):
        model = HierarchicalTransformer(args)
    assert param_count(args) == sum(p.numel() for p in model.parameters())
    embeddings = model.tok_embeddings.weight.numel() + model.vocab.weight.numel() + model.vocab_norm.weight.numel()
    assert param_count(args, embeddings=False) == param_count(args) - embeddings


@pytest.mark.parametrize("name", ["tiny_aunet2", "tiny_aunet3"])
def test_tiny_configs_have_a_few_hundred_thousand_parameters(name):
    args, _ = load_config(CONFIGS / f"{name}.yaml")
    model = HierarchicalTransformer(args.model)
    n = sum(p.numel() for p in model.parameters())
    assert n == param_count(args.model) and 200_000 <= n <= 900_000


def test_mean_context_counts_the_keys_of_every_query():
    for n in (1, 7, 64):
        for w in (-1, 1, 5, 64, 100):
            brute = sum(min(q + 1, w if w > 0 else n) for q in range(n)) / n
            assert mean_context(n, w) == pytest.approx(brute)


def test_flat_transformer_flops_are_6N_plus_attention():
    args = tiny_args(0, dimensions=[64], head_dims=[16], layers=[3], sliding_windows=[-1])
    T = 100
    f = flops_per_byte(args, T)
    weights = 3 * (4 * 64 * 64 + 3 * 64 * args.block.ffn_hidden(64)) + 64 * 258
    assert f.linear == pytest.approx(6 * weights)
    assert f.attention == pytest.approx(12 * 3 * 64 * (T + 1) / 2)


def reference_flops_per_token(args, seq_len):
    """The reference's own estimate (HierarchicalArgs.flops_per_token), restated: padded stage
    lengths, the transitions left out, windows approximated by w(2s - w)/s^2."""
    seqlens = [seq_len] + args.max_seqlens[1:]
    ratios = [s / seq_len for s in seqlens]
    L = args.n_levels
    layers = [n * 2 if k < L else n for k, n in enumerate(args.layers)]
    linear = sum(n * r * (4 * d * d + 3 * d * args.block.ffn_hidden(d))
                 for d, n, r in zip(args.dimensions, layers, ratios)) + args.dimensions[0] * args.vocab_size
    attn = 0.0
    for d, s, w, n, r in zip(args.dimensions, seqlens, args.sliding_windows, layers, ratios):
        w = min(s, w)
        attn += 6 * d * s * n * (w * (2 * s - w)) / s**2 * r
    return attn + 6 * linear


@pytest.mark.parametrize("name", ["aunet2_1b", "aunet3_1b"])
def test_padded_flops_agree_with_the_reference_estimate_plus_transitions(name):
    args, _ = load_config(CONFIGS / f"{name}.yaml")
    m, T = args.model, 8192
    ours = flops_per_byte(m, T, padded=True).total
    pos = stage_positions(m, T, padded=True)
    transitions = sum(6 * m.dimensions[i] * m.dimensions[i + 1] * (pos[i + 1] + pos[i]) for i in range(m.n_levels)) / T
    assert ours == pytest.approx(reference_flops_per_token(m, T) + transitions, rel=2e-3)


def test_expected_fractions_cost_less_than_the_padded_lengths():
    args, _ = load_config(CONFIGS / "aunet2_1b.yaml")
    m = args.model
    assert stage_positions(m, 8192) == pytest.approx([8192, 8192 / 5.5])
    assert stage_positions(m, 8192, padded=True) == [8192, 3200]
    assert stage_positions(m, 8192, fractions=(1.0, 0.5)) == [8192, 3200]  # capped by max_seqlens
    useful, padded = flops_per_byte(m, 8192), flops_per_byte(m, 8192, padded=True)
    assert useful.total < padded.total
    # Most of the work is the word-level trunk, so FLOPs per byte are ~6 * params * 1/5.5 + bytes stage.
    trunk = 6 * 25 * (4 * 2048**2 + 3 * 2048 * 5632) * DEFAULT_STAGE_FRACTIONS[1]
    assert trunk < useful.linear < trunk * 1.6
    assert math.isfinite(useful.attention) and useful.attention > 0
    with pytest.raises(ValueError):
        stage_positions(m, 8192, fractions=(1.0,))
