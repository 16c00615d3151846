"""Cached hierarchical generation (SPEC section 7) against full forward passes."""

from __future__ import annotations

import pytest
import torch

from aunet.config import BOS_ID, BlockArgs
from aunet.inference.generate import Generator, decode_utf8, sample_byte
from aunet.model import HierarchicalTransformer
from aunet.segment.segmenter import Segmenter
from model_helpers import POOLING_COMBOS, POOLING_TYPES, STRATEGIES, TEXT, tiny_args
from uncached_sampler import uncached_generate

BOS = BOS_ID


def build(levels: int, pooling: str = "simple_indexed_matmul", seed: int = 0, **kw) -> HierarchicalTransformer:
    torch.manual_seed(seed)
    return HierarchicalTransformer(tiny_args(levels, pooling, **kw)).eval()


def random_levels(n: int, depth: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, depth + 1, (n,), generator=gen).tolist()


def cached_logits(model, strategy, tokens, levels=None):
    gen = Generator(model, strategy)
    state = gen.new_state()
    out = [gen.push(state, t, None if levels is None else levels[n]) for n, t in enumerate(tokens)]
    return torch.stack(out), state


@torch.no_grad()
def full_logits(model, tokens, levels):
    logits, _ = model(torch.tensor([tokens]), torch.tensor([levels]))
    return logits[0]


@pytest.mark.parametrize("pooling", POOLING_TYPES + POOLING_COMBOS)
@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_cached_logits_equal_the_full_forward_with_segmenter_levels(n_levels, pooling):
    model = build(n_levels, pooling)
    tokens = [BOS, *TEXT.encode()[:40]]
    got, state = cached_logits(model, STRATEGIES[n_levels - 1], tokens)
    # The full pass is causal, so its logits at t are those of the prefix ending at t.
    want = full_logits(model, tokens, state.levels)
    assert (got - want).abs().max().item() <= 1e-4
    causal = Segmenter(STRATEGIES[n_levels - 1]).stream()
    assert state.levels[1:] == [min(int(causal.push(bytes([b]))[0]), n_levels) for b in tokens[1:]]


def test_every_prefix_matches_its_own_full_forward():
    model = build(2, "simple_indexed_matmul", seed=3)
    tokens = [BOS, *TEXT.encode()[50:80]]
    got, state = cached_logits(model, STRATEGIES[1], tokens)
    for t in range(1, len(tokens) + 1):
        want = full_logits(model, tokens[:t], state.levels[:t])[-1]
        assert (got[t - 1] - want).abs().max().item() <= 1e-4, t


@pytest.mark.parametrize(
    "n_levels,kw",
    [
        (1, dict(sliding_windows=[3, 2])),
        (2, dict(sliding_windows=[-1, 5, 1], head_dims=[4, 8, 16])),
        (2, dict(max_seqlens=[-1, 7, 3])),
        (3, dict(max_seqlens=[-1, 9, -1, 2], residuals=[True, False, True])),
        (2, dict(layers=[2, 0, 1], block=BlockArgs(multiple_of=16, rope_theta=100.0, n_kv_heads=1))),
    ],
)
def test_windows_truncation_and_odd_configs_with_random_levels(n_levels, kw):
    model = build(n_levels, "simple_repeat_indexed_matmul", seed=n_levels, **kw)
    tokens = [BOS, *random_levels(45, 255, seed=7)]
    levels = random_levels(46, n_levels + 1, seed=n_levels)  # levels above L count as L
    got, state = cached_logits(model, None, tokens, levels)
    want = full_logits(model, tokens, levels)
    assert (got - want).abs().max().item() <= 1e-4


def test_a_flat_model_is_a_plain_kv_cache():
    model = build(0, dimensions=[16], layers=[2], head_dims=[8], sliding_windows=[4], max_seqlens=[-1])
    tokens = [BOS, *TEXT.encode()[:30]]
    got, _ = cached_logits(model, None, tokens)
    assert (got - full_logits(model, tokens, [0] * len(tokens))).abs().max().item() <= 1e-4


def test_deeper_stages_step_once_per_segment_boundary():
    model = build(3, "simple")
    calls = {}

    def counter(name):
        def hook(*_):
            calls[name] = calls.get(name, 0) + 1
        return hook

    stacks = {"trunk": model.trunk}
    for i in range(3):
        stacks[f"enc{i}"], stacks[f"dec{i}"] = model.encoders[i], model.decoders[i]
    for name, stack in stacks.items():
        stack.layers[0].attention_norm.register_forward_hook(counter(name))
    tokens = [BOS, *random_levels(50, 255, seed=1)]
    levels = random_levels(51, 3, seed=2)
    cached_logits(model, None, tokens, levels)
    forced = [3] + levels[1:]
    opened = [sum(1 for m in forced if m >= s) for s in range(4)]  # stage s opens at level >= s
    assert opened[0] == 51 and opened[3] < opened[2] < opened[1] < 51
    for s in range(3):
        assert calls[f"enc{s}"] == calls[f"dec{s}"] == opened[s]
    assert calls["trunk"] == opened[3]


@pytest.mark.parametrize("n_levels", [1, 2])
def test_greedy_cached_equals_greedy_uncached(n_levels):
    model = build(n_levels, seed=11)
    want = uncached_generate(model, STRATEGIES[n_levels - 1], b"The cat sat", 24, levels="causal")
    assert Generator(model, STRATEGIES[n_levels - 1]).generate([b"The cat sat"], 24, temperature=0) == [want]


def test_flat_model_matches_the_uncached_sampler():
    model = build(0, dimensions=[16], layers=[2], head_dims=[8], sliding_windows=[4], max_seqlens=[-1])
    want = uncached_generate(model, None, b"Hello", 20, temperature=0)
    assert Generator(model, None).generate([b"Hello"], 20) == [want]


def test_seeded_sampling_batches_and_stop_strings():
    model = build(2, seed=5)
    gen = Generator(model, STRATEGIES[1])
    prompts = [b"The", b"", b"It looked at the dog, and"]
    kw = dict(max_bytes=20, temperature=1.5, top_k=40, top_p=0.9, seed=123)
    batch = gen.generate(prompts, **kw)
    assert batch == gen.generate(prompts, **kw)
    assert batch == [gen.generate([p], **kw)[0] for p in prompts]
    assert all(len(b) == 20 for b in batch)
    assert gen.generate(prompts, **{**kw, "seed": 124}) != batch
    first = batch[2]
    stop = first[5:7]
    cut = gen.generate([prompts[2]], **kw, stop=[stop])[0]
    assert cut == first[: first.index(stop) + len(stop)]


def test_stream_yields_what_generate_returns():
    model = build(2, seed=5)
    gen = Generator(model, STRATEGIES[1])
    kw = dict(temperature=1.2, top_k=30, top_p=0.95, seed=9)
    want = gen.generate([b"It was"], 25, **kw)[0]
    streamed = gen.stream(b"It was", 25, **kw)
    assert bytes([next(streamed)]) == want[:1]  # lazily, one byte at a time
    assert want[:1] + bytes(streamed) == want
    stop = want[10:12]
    assert bytes(gen.stream(b"It was", 25, **kw, stop=[stop])) == want[: want.index(stop) + 2]


def test_generation_stops_at_max_seqlens0():
    model = build(1, max_seqlens=[12, -1])
    assert len(Generator(model, STRATEGIES[0]).generate([b"abc"], 50)[0]) == 12 - 4 + 1


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.full((258,), -10.0)
    logits[[7, 9, 200]] = torch.tensor([3.0, 2.9, 0.0])
    logits[256] = 50.0  # BOS/EOS are never sampled
    rng = torch.Generator().manual_seed(0)
    assert {sample_byte(logits, 1.0, 2, 1.0, rng) for _ in range(200)} == {7, 9}
    assert {sample_byte(logits, 1.0, 0, 0.3, rng) for _ in range(50)} == {7}
    assert sample_byte(logits, 0.0, 0, 1.0, rng) == 7


def test_decode_utf8_trims_a_cut_character():
    euro = "€".encode()
    assert decode_utf8(b"ab" + euro[:2]) == "ab"
    assert decode_utf8(b"ab" + euro) == "ab€"
    assert decode_utf8(b"ab" + euro[:2], trim=False) == "ab\ufffd"
    assert decode_utf8(b"a\xffb") == "a\ufffdb"
    assert decode_utf8(b"\xf0\x9f\x98") == ""


def test_levels_from_the_level_head():
    model = build(2, seed=9, lambda_level=0.5)
    tokens = [BOS, *TEXT.encode()[:30]]
    got, state = cached_logits_with(Generator(model, None, levels="head"), tokens)
    with torch.no_grad():
        h = model.hidden(torch.tensor([tokens]), torch.tensor([state.levels]))
        predicted = model.level_logits(h[:, :-1], torch.tensor([tokens[1:]])).argmax(-1)[0].tolist()
    assert state.levels[1:] == predicted
    assert len(set(predicted)) > 1
    assert (got - full_logits(model, tokens, state.levels)).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="level head"):
        Generator(build(1), None, levels="head")


def cached_logits_with(gen, tokens):
    state = gen.new_state()
    return torch.stack([gen.push(state, t) for t in tokens]), state


@pytest.mark.parametrize(
    "n_levels,pooling,kw",
    [
        (0, "simple", dict(dimensions=[16], layers=[2], head_dims=[8], sliding_windows=[4], max_seqlens=[-1])),
        (1, "simple", {}),
        (2, "simple_non_param_indexed_matmul", dict(max_seqlens=[-1, 9, 4], sliding_windows=[5, 3, -1])),
        (3, "simple_repeat", dict(max_seqlens=[-1, 30, 12, 5])),
    ],
)
def test_prefill_then_steps_equal_the_full_forward(n_levels, pooling, kw):
    model = build(n_levels, pooling, seed=4, **kw)
    strategy = STRATEGIES[n_levels - 1] if n_levels else None
    data = TEXT.encode()[10:70]
    gen = Generator(model, strategy)
    first = gen.prefill([data[:45]])[0]
    rest = gen.step([data[45]])[0], *(gen.step([b])[0] for b in data[46:])
    state = gen.states[0]
    tokens = [BOS, *data]
    want = full_logits(model, tokens, state.levels)
    got = torch.stack([first, *rest])
    assert (got - want[45:]).abs().max().item() <= 1e-4
    pushed, pushed_state = cached_logits(model, strategy, tokens)
    assert pushed_state.levels == state.levels and pushed_state.stage_steps == state.stage_steps
    assert (pushed[45:] - got).abs().max().item() <= 1e-4


def test_bench_generate_quick_run_writes_json(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import REPO_ROOT

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benches" / "bench_generate.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["bytes"] for r in rows] == [64, 128]
    for r in rows:
        assert r["cached_bytes_per_s"] > 0 and r["uncached_bytes_per_s"] > 0
        assert r["stage_share"][0] == 1.0 and 0 < r["stage_share"][2] <= r["stage_share"][1] < 1
