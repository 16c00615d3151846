"""The loader's per-document work was cut down (lists instead of numpy scalars, bulk generator
draws, one concatenation per window): its batches and states must equal the previous
implementation's (tests/loader_oracle.py) exactly, integers compared for equality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aunet.config import DataArgs
from aunet.data import PackedLoader, ShardSource
from aunet.data.doc_order import SequentialOrder
from aunet.data.packing import Packer
from loader_oracle import ReferenceLoader, ReferencePacker
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import segment
from model_helpers import tiny_args


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader_reference")
    write_jsonl(root / "a.jsonl", sample_texts(300))
    segment(root / "a.jsonl", "--out", root / "a", *STRATEGY_ARGS, "--shard-size", "3KB")
    # Short documents, empty ones included: many documents per window.
    write_jsonl(root / "b.jsonl", [("ab " * (i % 5)) for i in range(400)])
    segment(root / "b.jsonl", "--out", root / "b", *STRATEGY_ARGS, "--shard-size", "2KB")
    return root / "a", root / "b"


def same(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if hasattr(x, "numpy"):
        x, y = x.numpy(), y.numpy()
    if isinstance(x, np.ndarray):
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    return x == y


@pytest.mark.parametrize("seq_len,buffer,bos,eos", [(32, 8, True, True), (200, 1, True, False), (7, 64, False, True),
                                                   (50, 3, False, False)])
def test_batches_and_states_equal_the_reference(sources, seq_len, buffer, bos, eos):
    args = DataArgs(sources={str(sources[0]): 1.0, str(sources[1]): 2.0}, seq_len=seq_len, batch_size=3,
                    shuffle_buffer=buffer, add_bos=bos, add_eos=eos, load_async=False, seed=11)
    model = tiny_args(1, max_seqlens=[-1, seq_len])
    new, ref = PackedLoader(args, model=model), ReferenceLoader(args, model=model)
    for step in range(60):  # several epochs of the short source
        a, b = next(new), next(ref)
        assert same(a, b), step
        assert json.dumps(new.state_dict()) == json.dumps(ref.state_dict()), step
        if step == 25:  # resume both from the other's state mid-stream
            state = json.loads(json.dumps(ref.state_dict()))
            new, ref = PackedLoader(args, model=model), ReferenceLoader(args, model=model)
            new.load_state_dict(state)
            ref.load_state_dict(state)


@pytest.mark.parametrize("seq_len,bos,eos", [(16, True, True), (100, False, True), (5, True, False)])
def test_a_finite_order_packs_as_the_reference(sources, seq_len, bos, eos):
    """Evaluation's once-through packing, its padded last window and its end included."""
    source = ShardSource(sources[1])
    for rank, world in ((0, 1), (1, 3)):
        new = Packer(SequentialOrder(source, rank, world), seq_len, bos, eos)
        ref = ReferencePacker(SequentialOrder(source, rank, world), seq_len, bos, eos)
        while True:
            try:
                want = ref.next_window()
            except StopIteration:
                with pytest.raises(StopIteration):
                    new.next_window()
                break
            got = new.next_window()
            assert all(same(np.asarray(g), np.asarray(w)) for g, w in zip(got, want))
