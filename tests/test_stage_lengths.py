"""Stage lengths per batch (SPEC section 5): every stage runs on what its batch needs, rounded
up to a bucket, and the result equals the padded computation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benches"))
from corpora import cjk_prose, english_prose, multilingual_docs, stdlib_docs  # noqa: E402

from aunet.config import BlockArgs, ModelArgs, load_config  # noqa: E402
from aunet.model import HierarchicalTransformer, stage_lengths  # noqa: E402
from aunet.model.flops import batch_flops, flops_at  # noqa: E402
from aunet.model.lengths import bucketed_length, stage_counts  # noqa: E402
from aunet.model.pooling import pool_index, registered_types  # noqa: E402
from model_helpers import packed_levels  # noqa: E402


def padded_walk_counts(levels: torch.Tensor, args: ModelArgs) -> list[list[int]]:
    """Per stage, each row's real positions as the padded pass pools them (max_seqlens caps)."""
    L, caps = args.n_levels, args.stage_lengths(levels.shape[1])
    lev = levels.long().clamp(max=L)
    lev[:, 0] = L
    counts = [[levels.shape[1]] * len(levels)]
    for i in range(L):
        index = pool_index(lev, i, caps[i + 1])
        counts.append(index.valid.sum(1).tolist())
        lev = index.levels
    return counts


@pytest.mark.parametrize("depth, caps", [(1, [-1, 40]), (1, [-1, -1]), (2, [-1, 50, 12]), (3, [-1, 70, 30, 9])])
@pytest.mark.parametrize("seed", range(3))
def test_counts_are_the_real_positions_of_the_padded_pass(depth, caps, seed):
    """The host's count of every row at every stage (what the lengths are built from) equals
    the number of real slots the model's own pooling finds, truncation by max_seqlens included."""
    rng = np.random.default_rng(seed)
    n = depth + 1
    args = ModelArgs(dimensions=[16] * n, layers=[1] * n, head_dims=[8] * n, sliding_windows=[-1] * n, max_seqlens=caps)
    levels = rng.integers(0, depth + 2, size=(5, 160)) * (rng.random((5, 160)) < 0.4)
    counts = stage_counts(levels.astype(np.uint8), args)
    assert counts.T.tolist() == padded_walk_counts(torch.from_numpy(levels), args)


def tiny_aunet(depth: int, pooling_type: str, caps: list[int], bucket: int = 128) -> HierarchicalTransformer:
    n = depth + 1
    torch.manual_seed(0)
    return HierarchicalTransformer(ModelArgs(
        dimensions=[32, 64, 128, 128][:n], layers=[1] * n, head_dims=[16] * n, sliding_windows=[64, 96, -1, -1][:n],
        max_seqlens=caps, pooling_type=pooling_type, block=BlockArgs(multiple_of=16), stage_bucket=bucket)).eval()


@pytest.mark.parametrize("pooling_type", registered_types())
@pytest.mark.parametrize("depth, caps", [(1, [-1, 300]), (1, [-1, 150]), (2, [-1, 300, 200])])
def test_bucketed_stages_give_the_padded_logits_and_loss(pooling_type, depth, caps):
    """Running each stage on the batch's bucketed length gives the logits and loss of the pass
    padded to max_seqlens, also when the caps truncate (caps 150: real text pools into more).
    Tolerance 2e-5: the two passes multiply matrices of different shapes, whose fp32 sums may
    be blocked differently; every real position sees the same inputs."""
    model = tiny_aunet(depth, pooling_type, caps, bucket=32)
    tokens, levels = packed_levels(stdlib_docs(40_000), {"word1": "1@1", "word2": "2@2"} if depth > 1 else {"word1": "1@1"},
                                   3, 513)
    tok, lev = torch.from_numpy(tokens), torch.from_numpy(levels.astype(np.int64))
    lengths = stage_lengths(levels[:, :-1], model.args)
    assert lengths[1:] != model.args.stage_lengths(512)[1:] or caps[1] == 150  # the test runs fewer slots
    with torch.no_grad():
        padded, loss_padded = model(tok[:, :-1], lev[:, :-1], tok[:, 1:])
        bucketed, loss_bucketed = model(tok[:, :-1], lev[:, :-1], tok[:, 1:], stage_lengths=lengths)
    torch.testing.assert_close(bucketed, padded, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(loss_bucketed, loss_padded, atol=2e-5, rtol=2e-5)


def test_gradients_equal_the_padded_pass():
    model = tiny_aunet(2, "simple_indexed_matmul", [-1, 300, 200], bucket=32).train()
    tokens, levels = packed_levels(stdlib_docs(20_000), {"word1": "1@1", "word2": "2@2"}, 2, 257)
    tok, lev = torch.from_numpy(tokens), torch.from_numpy(levels.astype(np.int64))
    grads = []
    for lengths in (None, stage_lengths(levels[:, :-1], model.args)):
        model.zero_grad()
        model(tok[:, :-1], lev[:, :-1], tok[:, 1:], stage_lengths=lengths)[1].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


CORPORA = {
    "english prose": lambda: english_prose(),
    "python code": lambda: stdlib_docs(400_000),
    "cjk and mixed scripts": lambda: cjk_prose() + multilingual_docs(100_000),
}


@pytest.mark.parametrize("corpus", CORPORA)
def test_executed_flops_stay_near_what_the_batch_needs_at_1b_proportions(corpus):
    """The "1B" AU-Net-2 (configs/aunet2_1b.yaml: seq_len 8192, trunk capped at 3200, batch 12)
    on real text: the FLOPs run with bucketed stages are within 15% of the FLOPs the batch needs
    (each stage at its largest real count, the least a dense batch can run), where padding to
    max_seqlens runs about twice that. FLOPs are counted from the shapes, so the real widths
    apply without building the model."""
    cfg, _ = load_config(REPO_ROOT / "configs" / "aunet2_1b.yaml")
    args, B, T = cfg.model, cfg.data.batch_size, cfg.data.seq_len
    _, levels = packed_levels(CORPORA[corpus](), cfg.data.regex.strategy, B, T)
    counts = stage_counts(levels, args)
    needed = B * flops_at(args, counts.max(axis=0)).total
    useful, executed = batch_flops(args, counts, stage_lengths(levels, args))
    _, padded = batch_flops(args, counts, args.stage_lengths(T))
    assert executed / needed <= 1.15, (executed / needed, counts[:, 1].max())
    assert padded / needed > 1.5  # what the reference's padding costs on the same batch
    assert useful <= needed <= executed


def test_scaled_down_1b_gives_the_padded_logits_at_seq_len_8192():
    """The 1B proportions (byte stage windowed at 512, trunk capped at 3200 of 8192) with small
    widths: the bucketed pass runs about half the trunk slots and gives the padded logits."""
    cfg, _ = load_config(REPO_ROOT / "configs" / "aunet2_1b.yaml")
    big = cfg.model
    torch.manual_seed(0)
    model = HierarchicalTransformer(ModelArgs(
        dimensions=[32, 64], layers=[1, 2], head_dims=[16, 32], sliding_windows=big.sliding_windows,
        max_seqlens=big.max_seqlens, pooling_type=big.pooling_type, block=BlockArgs(multiple_of=16))).eval()
    tokens, levels = packed_levels(english_prose(), cfg.data.regex.strategy, 2, 8192)
    lengths = stage_lengths(levels, model.args)
    assert lengths[1] <= 2048 < big.max_seqlens[1]
    tok, lev = torch.from_numpy(tokens), torch.from_numpy(levels.astype(np.int64))
    with torch.no_grad():
        torch.testing.assert_close(model(tok, lev, stage_lengths=lengths)[0], model(tok, lev)[0], atol=2e-5, rtol=2e-5)


def test_lengths_are_bucketed_and_capped():
    args = ModelArgs(dimensions=[16, 16, 16], layers=[1, 1, 1], head_dims=[8, 8, 8], sliding_windows=[-1] * 3,
                     max_seqlens=[-1, 300, 100])
    levels = np.zeros((2, 1000), dtype=np.uint8)
    levels[0, 1:130] = 1  # 130 pooled positions at stage 1 (position 0 included), one of them at stage 2
    levels[1, ::10] = 2  # 100 at stage 1 and stage 2
    assert stage_lengths(levels, args) == [1000, 256, 100]  # 130 -> 256; 100 -> 128, capped at 100
    assert stage_lengths(levels, args, bucket=64) == [1000, 192, 100]
    assert stage_lengths(levels, args, bucket=0) == [1000, 300, 100]  # the reference's padding
    assert stage_lengths(torch.from_numpy(levels), args) == [1000, 256, 100]
    assert stage_lengths(np.zeros((1, 5), np.uint8), args) == [5, 5, 5]  # never past the stage before
    assert bucketed_length(1, args) == 128 and bucketed_length(129, args) == 256
    capped = ModelArgs(dimensions=[16], layers=[1], head_dims=[8], sliding_windows=[-1], max_seqlens=[200], residuals=[])
    assert bucketed_length(150, capped) == 200 and bucketed_length(200, capped) == 200


def test_bad_stage_lengths_are_refused():
    model = tiny_aunet(1, "simple_indexed_matmul", [-1, 40])
    tokens, levels = torch.zeros(1, 64, dtype=torch.long), torch.zeros(1, 64, dtype=torch.long)
    for bad in ([64], [64, 41], [63, 8], [64, 0]):
        with pytest.raises(ValueError, match="stage_lengths"):
            model(tokens, levels, stage_lengths=bad)
    with pytest.raises(ValueError, match="stage_bucket"):
        ModelArgs(stage_bucket=-1)
