"""Sizing models to a FLOPs-per-byte target (aunet.baselines.sizing, used by benches/compare.py)."""

from __future__ import annotations

import math

import pytest

from aunet.model.flops import flops_per_byte, param_count
from aunet.model import HierarchicalTransformer
from aunet.baselines.sizing import TEMPLATES, build, size_to

FRACTIONS = (1.0, 0.2, 0.15)


@pytest.mark.parametrize("name", list(TEMPLATES))
@pytest.mark.parametrize("target", [5e5, 1e6, 4e6, 2e7])
def test_sized_models_land_near_the_target_and_build(name, target):
    t = TEMPLATES[name]
    sized = size_to(t, target, 512, FRACTIONS, bytes_per_token=3.0 if t.bpe else 1.0, vocab_size=2048 if t.bpe else 258)
    assert abs(math.log(sized.flops_per_byte / target)) < math.log(1.25)
    assert sized.model.n_levels == len(t.widths) - 1
    assert sized.executed_flops_per_byte >= sized.flops_per_byte * (1 - 1e-9)
    model = HierarchicalTransformer(sized.model)
    assert sum(p.numel() for p in model.parameters()) == param_count(sized.model)


@pytest.mark.slow  # 2 s: sizes and builds models at several budgets
def test_more_flops_per_byte_means_a_bigger_model():
    for t in TEMPLATES.values():
        sizes = [param_count(size_to(t, target, 512, FRACTIONS).model) for target in (5e5, 2e6, 8e6, 3.2e7)]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_bpe_cost_per_byte_is_cost_per_token_over_bytes_per_token():
    sized = build(TEMPLATES["bpe"], 1.0, 512, FRACTIONS, bytes_per_token=3.2, vocab_size=1024)
    assert sized.seq_len == 160  # the tokens of about 512 bytes
    per_token = flops_per_byte(sized.model, 160).total
    assert sized.flops_per_byte == pytest.approx(per_token / 3.2)


def test_aunet_stage_caps_follow_the_measured_fractions():
    sized = build(TEMPLATES["aunet3"], 1.0, 512, FRACTIONS)
    assert sized.model.max_seqlens == [-1, 208, 160]  # 2 x 0.2 x 512 and 2 x 0.15 x 512, rounded up to 16
    useful = flops_per_byte(sized.model, 512, fractions=FRACTIONS).total
    assert sized.flops_per_byte == pytest.approx(useful)
