"""Compilation is bounded: blocks compile once per stage-length bucket, with no graph break."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benches"))
from corpora import cjk_prose, english_prose, multilingual_docs, stdlib_docs  # noqa: E402
from model_helpers import packed_levels  # noqa: E402

from aunet.config import BlockArgs, ModelArgs  # noqa: E402
from aunet.model import HierarchicalTransformer, stage_lengths  # noqa: E402
from aunet.model.compile import compile_blocks, compile_shapes  # noqa: E402


@pytest.mark.slow  # inductor compiles a graph per bucket: about 25 s on 2 cores
def test_inductor_compiles_each_bucket_once_without_graph_breaks_over_30_varied_batches():
    """30 training steps on code, English prose, CJK and mixed scripts (so the pooled stage's
    length changes from batch to batch) with inductor on the CPU: one graph per distinct block
    shape (the byte stage's and each trunk bucket met), at most `compile_shapes`, and dynamo
    reports no graph break (`fullgraph=True` would also have raised)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    args = ModelArgs(dimensions=[32, 64], layers=[1, 1], head_dims=[16, 16], sliding_windows=[64, -1],
                     max_seqlens=[-1, 100], block=BlockArgs(multiple_of=16), stage_bucket=32)
    model = HierarchicalTransformer(args)
    assert compile_blocks(model) == 3
    docs = [*stdlib_docs(30_000), *english_prose()[:4], *cjk_prose(), *multilingual_docs(30_000)]
    order = np.random.default_rng(0).permutation(len(docs))
    tokens, levels = packed_levels([docs[i] for i in order], {"word1": "1@1"}, 2 * 30, 257)
    shapes = set()
    for b in range(30):
        tok = torch.from_numpy(tokens[2 * b: 2 * b + 2])
        lev = levels[2 * b: 2 * b + 2]
        lengths = stage_lengths(lev[:, :-1], args)
        shapes.add(lengths[1])
        model.zero_grad()
        _, loss = model(tok[:, :-1], torch.from_numpy(lev[:, :-1].astype(np.int64)), tok[:, 1:], stage_lengths=lengths)
        loss.backward()
        assert torch.isfinite(loss)
    assert len(shapes) >= 2  # the text did vary the trunk's length
    assert counters["graph_break"] == {}
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1 + len(shapes) <= compile_shapes(args, 256)
