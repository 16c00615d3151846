"""Bits per byte of a model on held-out shards (SPEC section 4): summed byte nats / bytes / ln 2.

Every held-out byte is scored exactly once. Rank r of W takes the documents whose index is
r mod W, in manifest order, and lays them out as training does ([BOS] + text + [EOS] per
document, concatenated) in windows of seq_len + 1 tokens that overlap by one, so no target is
skipped; the last window of each rank is padded and its padding is not scored. Under ZeRO-3
every rank must run the same number of forward passes (parameters are gathered collectively),
so a rank with fewer windows runs empty batches (nothing scored) until the longest is done.
Sources are scored in full whatever their training weights; `max_batches` caps the batches
per rank (then the share scored is the first part of each rank's documents).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

IGNORE = -100


def rank_refs(source, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
    """(unit, row) of documents rank, rank + W, ... of a ShardSource or TokenizedSource."""
    first = np.asarray(source.first_doc)
    for d in range(rank, source.documents, world_size):
        unit = int(np.searchsorted(first, d, side="right")) - 1
        yield unit, d - int(first[unit])


def rank_stream_length(source, rank: int, world_size: int, add_bos: bool, add_eos: bool) -> int:
    return sum(source.length(*ref) + int(add_bos) + int(add_eos) for ref in rank_refs(source, rank, world_size))


def eval_windows(source, rank: int, world_size: int, seq_len: int, add_bos: bool = True,
                 add_eos: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Windows (tokens, levels, scored targets) of seq_len + 1 over this rank's documents."""
    bos = (np.array([source.bos_id], np.int64), np.array([source.depth], np.uint8))
    eos = (np.array([source.eos_id], np.int64), np.array([0], np.uint8))
    tokens, levels = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    for ref in rank_refs(source, rank, world_size):
        text, mask = source.document(*ref)
        parts = [(tokens, levels)] + [bos] * add_bos + [(text.astype(np.int64), mask)] + [eos] * add_eos
        tokens, levels = np.concatenate([t for t, _ in parts]), np.concatenate([lv for _, lv in parts])
        while len(tokens) >= seq_len + 1:
            yield tokens[: seq_len + 1], levels[: seq_len + 1], seq_len
            tokens, levels = tokens[seq_len:], levels[seq_len:]  # the last token opens the next window
    if len(tokens) > 1:
        pad = seq_len + 1 - len(tokens)
        yield (np.concatenate([tokens, np.zeros(pad, np.int64)]), np.concatenate([levels, np.zeros(pad, np.uint8)]),
               len(tokens) - 1)


def eval_batches(sources, rank: int, world_size: int, seq_len: int, batch_size: int, add_bos: bool = True,
                 add_eos: bool = True) -> Iterator[dict]:
    """Batches of `eval_windows` over every source, with `targets` -100 where nothing is scored
    and `target_bytes` (the bytes each target stands for)."""
    def windows():
        for src in sources:
            yield from ((w, src.token_bytes) for w in eval_windows(src, rank, world_size, seq_len, add_bos, add_eos))

    chunk = []
    for item in windows():
        chunk.append(item)
        if len(chunk) == batch_size:
            yield _collate(chunk, seq_len)
            chunk = []
    if chunk:
        yield _collate(chunk, seq_len)


def _collate(chunk, seq_len: int) -> dict:
    tokens = torch.from_numpy(np.stack([t for (t, _, _), _ in chunk]))
    levels = torch.from_numpy(np.stack([lv for (_, lv, _), _ in chunk]))
    targets = tokens[:, 1:].clone()
    target_bytes = torch.zeros_like(targets, dtype=torch.int32)
    for b, ((_, _, scored), table) in enumerate(chunk):
        targets[b, scored:] = IGNORE
        target_bytes[b, :scored] = torch.from_numpy(table)[targets[b, :scored]]
    return {"tokens": tokens[:, :-1], "levels": levels[:, :-1], "targets": targets, "target_bytes": target_bytes}


def _empty_batch(batch_size: int, seq_len: int) -> dict:
    zeros = torch.zeros((batch_size, seq_len), dtype=torch.long)
    return {"tokens": zeros, "levels": zeros.to(torch.uint8), "targets": torch.full_like(zeros, IGNORE),
            "target_bytes": zeros.to(torch.int32)}


@torch.no_grad()
def heldout_bpb(model, sources: dict[str, float], seq_len: int, batch_size: int, max_batches: int | None,
                rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu", reduce=None,
                tokenizer: str | None = None, add_bos: bool = True, add_eos: bool = True) -> dict:
    """{"bpb", "bytes"} over every byte of the held-out `sources` (shard directories; weights
    are ignored). `reduce` is torch.distributed.all_reduce when several ranks evaluate
    together. `tokenizer`: a BPE model's tokenizer file (bpb then counts the bytes its tokens
    stand for)."""
    from aunet.data.tokenized_source import open_sources
    from aunet.model import byte_nats

    opened = open_sources(sources, tokenizer)
    windows = sum(math.ceil(max(rank_stream_length(s, rank, world_size, add_bos, add_eos) - 1, 0) / seq_len) for s in opened)
    steps = torch.tensor([float(math.ceil(windows / batch_size))], dtype=torch.float64)
    if reduce is not None:
        import torch.distributed as dist

        reduce(steps, op=dist.ReduceOp.MAX)
    steps = int(steps) if max_batches is None else min(int(steps), max_batches)

    was_training = model.training
    model.eval()
    nats = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    batches = eval_batches(opened, rank, world_size, seq_len, batch_size, add_bos, add_eos)
    for _ in range(steps):
        batch = next(batches, None) or _empty_batch(batch_size, seq_len)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, _ = model(batch["tokens"], batch["levels"])
        n, c = byte_nats(logits, batch["targets"], batch["target_bytes"])
        nats += n.double().cpu()
        count += c.double().cpu()
    totals = torch.stack([nats, count])
    if reduce is not None:
        reduce(totals)
    model.train(was_training)
    return {"bpb": float(totals[0] / totals[1].clamp(min=1)) / math.log(2), "bytes": int(totals[1])}
