"""Held-out batches that score every byte exactly once (bits per byte, SPEC section 4).

Each rank takes its share of the documents (the training loader's rank split,
`aunet.data.doc_order.RankShare`), in manifest order, and packs them with the training packer
([BOS] + text + [EOS] per document, windows of seq_len + 1 tokens that overlap by one, so no
target is skipped); the last window of each rank is padded and its padding is not scored
(target `IGNORE`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from aunet.data.doc_order import RankShare, SequentialOrder
from aunet.data.packing import Packer

#: Target of a position that is not scored (cross-entropy's ignore index).
IGNORE = -100


def rank_stream_length(source, rank: int, world_size: int, add_bos: bool, add_eos: bool) -> int:
    """Tokens in this rank's stream of [BOS] + text + [EOS] documents."""
    return sum(source.length(*ref) + int(add_bos) + int(add_eos) for ref in RankShare(source, rank, world_size).documents())


def eval_windows(source, rank: int, world_size: int, seq_len: int, add_bos: bool = True,
                 add_eos: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Windows (tokens, levels, scored targets) of seq_len + 1 over this rank's documents,
    packed as training packs them; the last one padded."""
    packer = Packer(SequentialOrder(source, rank, world_size), seq_len, add_bos, add_eos)
    while True:
        try:
            yield packer.next_window()
        except StopIteration:
            return


def eval_batches(sources, rank: int, world_size: int, seq_len: int, batch_size: int, add_bos: bool = True,
                 add_eos: bool = True) -> Iterator[dict]:
    """Batches of `eval_windows` over every source, with `targets` IGNORE where nothing is
    scored and `target_bytes` (the bytes each target stands for)."""
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


def empty_batch(batch_size: int, seq_len: int) -> dict:
    """A batch that scores nothing: what a rank whose share ran out feeds to keep in step."""
    zeros = torch.zeros((batch_size, seq_len), dtype=torch.long)
    return {"tokens": zeros, "levels": zeros.to(torch.uint8), "targets": torch.full_like(zeros, IGNORE),
            "target_bytes": zeros.to(torch.int32)}
