"""The packed loader: windows, alignment, rank split, mixing, exact resume, bad paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aunet import Segmenter
from aunet.config import DataArgs
from aunet.data import PackedLoader, ShardSource
from aunet.config.model import BOS_ID as BOS, EOS_ID as EOS
from aunet.data.doc_order import DocOrder, RankShare, SequentialOrder
from aunet.data.packing import Packer
from aunet import segment_corpus
from helpers import REPO_ROOT
from segment_fixtures import STRATEGY, STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import segment


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    write_jsonl(root / "a.jsonl", sample_texts(400))
    segment(root / "a.jsonl", "--out", root / "shards", *STRATEGY_ARGS, "--shard-size", "3KB")
    return root / "shards"


def make_source(root: Path, name: str, letter: str, n: int = 200) -> Path:
    write_jsonl(root / f"{name}.jsonl", [(letter + " ") * (5 + i % 7) for i in range(n)])
    segment(root / f"{name}.jsonl", "--out", root / name, *STRATEGY_ARGS)
    return root / name


def stream_of(order: DocOrder, docs: int) -> tuple[np.ndarray, np.ndarray]:
    seg = Segmenter(STRATEGY)
    tokens, levels = [], []
    for _ in range(docs):
        text, mask = order.source.document(*order.next())
        assert mask.tobytes() == seg.levels(text.tobytes()).tobytes()  # masks aligned with bytes
        tokens += [BOS, *text.tolist(), EOS]
        levels += [2, *mask.tolist(), 0]
    return np.array(tokens), np.array(levels)


def test_windows_overlap_by_one_and_rebuild_the_stream(shards):
    S = 64
    loader = PackedLoader(DataArgs(sources={str(shards): 1.0}, seq_len=S, batch_size=1, shuffle_buffer=1, load_async=False))
    windows = [next(loader) for _ in range(40)]
    tokens = [np.concatenate([w["tokens"][0].numpy(), w["targets"][0, -1:].numpy()]) for w in windows]
    levels = [np.concatenate([w["levels"][0].numpy(), w["target_levels"][0, -1:].numpy()]) for w in windows]
    for a, b in zip(tokens, tokens[1:]):
        assert a[-1] == b[0]  # consecutive windows share one token: no target skipped
    for w in windows:
        assert np.array_equal(w["targets"][0, :-1].numpy(), w["tokens"][0, 1:].numpy())
    stitched = np.concatenate([tokens[0]] + [t[1:] for t in tokens[1:]])
    stitched_levels = np.concatenate([levels[0]] + [lv[1:] for lv in levels[1:]])
    expected, expected_levels = stream_of(DocOrder(ShardSource(shards), 0, 1, 777, 1), 200)
    assert np.array_equal(stitched, expected[: len(stitched)])
    assert np.array_equal(stitched_levels, expected_levels[: len(stitched)])
    assert (stitched == BOS).sum() > 5  # documents really were packed across boundaries


@pytest.mark.parametrize("world", [1, 3])
def test_a_finite_order_packs_every_token_once_and_pads_the_last_window(shards, world):
    """The packer evaluation uses: the training packer over a rank's documents, read once."""
    S = 50
    source = ShardSource(shards)
    for rank in range(world):
        packer = Packer(SequentialOrder(source, rank, world), S, add_bos=True, add_eos=True)
        windows = []
        while True:
            try:
                windows.append(packer.next_window())
            except StopIteration:
                break
        assert all(scored == S for _, _, scored in windows[:-1]) and 0 < windows[-1][2] <= S
        tokens, levels, last = windows[-1]
        assert not tokens[last + 1:].any() and not levels[last + 1:].any()  # padding
        stitched = np.concatenate([windows[0][0][: windows[0][2] + 1]] + [t[1: n + 1] for t, _, n in windows[1:]])
        share = RankShare(source, rank, world)
        docs = share.end - share.start
        order = SequentialOrder(source, rank, world)
        expected, _ = stream_of(order, docs)
        assert np.array_equal(stitched, expected)  # every token once, in manifest order, nothing after
        with pytest.raises(StopIteration):
            order.next()
        with pytest.raises(StopIteration):
            packer.next_window()


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_and_complete_over_an_epoch(shards, world):
    source = ShardSource(shards)
    seen = []
    for rank in range(world):
        order = DocOrder(source, rank, world, seed=5, shuffle_buffer=1)
        mine = []
        while True:
            ref = order.next()
            if order.epoch > 0:  # that document already belongs to the second epoch
                break
            mine.append(ref)
        seen.append(set(mine))
        assert len(mine) == len(seen[-1])  # no document twice within an epoch
    everything = set().union(*seen)
    assert sum(len(s) for s in seen) == len(everything)  # disjoint
    assert len(everything) == source.documents  # complete
    index = [sorted(int(source.first_doc[u]) + r for u, r in mine) for mine in seen]
    assert all(ix == list(range(ix[0], ix[-1] + 1)) for ix in index)  # each share is one contiguous run
    assert [ix[0] for ix in index] == sorted(ix[0] for ix in index)  # in rank order
    weight = [sum(source.length(u, r) + 1 for u, r in mine) for mine in seen]  # what the split balances
    longest = max(source.length(u, r) + 1 for mine in seen for u, r in mine)
    assert max(weight) - min(weight) <= 2 * longest  # balanced by bytes, to a document


@pytest.mark.parametrize("world,buffer", [(2, 8), (3, 5)])
def test_ranks_with_a_shuffle_buffer_are_disjoint_and_complete_over_epochs(shards, world, buffer):
    """With a shuffle buffer, documents of consecutive epochs mix at the boundary, so the exact
    invariant is on what has left the share's reading stream: the documents drawn plus those
    still buffered are whole epochs of the rank's share, each document once per epoch."""
    from collections import Counter

    source = ShardSource(shards)
    epochs = 3
    shares = []
    for rank in range(world):
        order = DocOrder(source, rank, world, seed=5, shuffle_buffer=buffer)
        share = list(RankShare(source, rank, world).documents())
        drawn = [order.next() for _ in range(epochs * len(share) - (buffer - 1))]
        held = [tuple(ref) for ref in order.buffer[: order.filled].tolist()]
        counts = Counter(drawn) + Counter(held)
        assert set(counts) == set(share) and set(counts.values()) == {epochs}  # nothing skipped, nothing twice
        assert all(Counter(drawn)[ref] >= epochs - 1 for ref in share)  # at most the buffer is still to come
        assert drawn[: len(share)] != share  # the buffer really shuffles
        shares.append(set(share))
    everything = set().union(*shares)
    assert sum(len(s) for s in shares) == len(everything) == source.documents  # disjoint and complete


def test_mixing_follows_the_weights(tmp_path):
    a, b = make_source(tmp_path, "a", "a"), make_source(tmp_path, "b", "b")
    loader = PackedLoader(DataArgs(sources={str(a): 3.0, str(b): 1.0}, seq_len=16, batch_size=8, prefetch_size=2, seed=777))
    from_a = total = 0
    for _ in range(250):
        batch = next(loader)["tokens"].numpy()
        from_a += int(((batch == ord("a")).sum(axis=1) > 0).sum())
        total += batch.shape[0]
    loader.close()
    assert abs(from_a / total - 0.75) < 0.04, from_a / total


def test_state_restores_exactly_even_with_prefetch(shards, tmp_path):
    args = DataArgs(sources={str(shards): 1.0}, seq_len=32, batch_size=3, shuffle_buffer=8, prefetch_size=3)
    first = PackedLoader(args)
    for _ in range(7):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # the state is plain JSON
    expected = [next(first) for _ in range(6)]
    first.close()
    resumed = PackedLoader(args)
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(6)]
    resumed.close()
    for e, g in zip(expected, got):
        for key in ("tokens", "targets", "levels", "target_levels"):
            assert np.array_equal(e[key].numpy(), g[key].numpy())


def test_bad_paths_and_values_fail_early(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        PackedLoader(DataArgs(sources={str(tmp_path / "missing"): 1.0}))
    with pytest.raises(ValueError, match=r"sources\..*: weight"):
        DataArgs(sources={str(shards): -1})
    with pytest.raises(ValueError, match="at least one shard directory"):
        PackedLoader(DataArgs())
    PackedLoader(DataArgs(sources={str(shards): 1.0, str(tmp_path / "missing"): 0.0})).close()  # weight 0: not opened
    with pytest.raises(ValueError, match="loader state is for"):
        other = PackedLoader(DataArgs(sources={str(shards): 1.0}, load_async=False), rank=1, world_size=2)
        PackedLoader(DataArgs(sources={str(shards): 1.0}, load_async=False)).load_state_dict(other.state_dict())


def resident_bytes(files: list[Path]) -> int:
    """Bytes of `files` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(v) for v in out.split())


def evict(files: list[Path]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.mark.slow  # 7 s: segments a corpus and reads it with four loaders
def test_each_of_four_ranks_reads_about_a_quarter_of_the_shards(tmp_path):
    """Measured in the page cache: each rank, started on an empty cache, reads one epoch of its
    share in its own process; together the ranks see every document exactly once."""
    texts = [("lorem ipsum dolor sit amet " * (20 + i % 300))[: 200 + (i * 7919) % 20000] for i in range(5000)]
    write_jsonl(tmp_path / "big.jsonl", texts)
    segment_corpus(tmp_path / "big.jsonl", tmp_path / "shards", STRATEGY, shard_size="2MB")
    files = sorted((tmp_path / "shards").glob("part-*.arrow"))
    assert len(files) >= 8
    total = sum(f.stat().st_size for f in files)
    evict(files)
    if resident_bytes(files) > 0.05 * total:
        pytest.skip("this file system keeps shard pages cached after POSIX_FADV_DONTNEED (nothing to measure)")
    W, seen, shares = 4, [], []
    for rank in range(W):
        evict(files)
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "scripts" / "read_rank_share.py"), str(tmp_path / "shards"),
                               str(rank), str(W)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        seen.append({tuple(ref) for ref in json.loads(proc.stdout)["docs"]})
        shares.append(resident_bytes(files) / total)
    assert sum(map(len, seen)) == len(set().union(*seen)) == len(texts)  # every document exactly once
    print("page-cache share read per rank:", [round(s, 3) for s in shares])
    # About 1/W each: the share's own pages, plus readahead and the units at its two boundaries
    # (the strided split of earlier versions read 100% on every rank).
    assert all(0.15 < share < 0.5 for share in shares) and sum(shares) < 1.6, shares
