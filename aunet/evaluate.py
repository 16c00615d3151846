"""Bits per byte of a model on held-out shards (SPEC section 4): summed byte nats / bytes / ln 2.

The held-out documents are read in order (no shuffle), packed like training windows; with
several ranks each reads its own share and the sums are all-reduced.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def heldout_bpb(model, sources: dict[str, float], seq_len: int, batch_size: int, max_batches: int | None,
                rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu", reduce=None,
                tokenizer: str | None = None) -> dict:
    """{"bpb", "bytes"}; `reduce(tensor)` sums across ranks when given (torch.distributed.all_reduce).
    `tokenizer`: a BPE model's tokenizer file (bpb then counts the bytes its tokens stand for)."""
    from aunet.data import LoaderArgs, PackedLoader
    from aunet.model import byte_nats

    was_training = model.training
    model.eval()
    nats = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    loader = PackedLoader(LoaderArgs(sources, seq_len=seq_len, batch_size=batch_size, shuffle_buffer=1, prefetch=0,
                                     rank=rank, world_size=world_size, seed=0, tokenizer=tokenizer))
    # About one pass over each rank's share; every rank runs the same number of forwards
    # (ZeRO-3 gathers parameters collectively, so a rank that stopped early would hang the rest).
    total = sum(src.total_tokens + 2 * src.documents for src in loader.sources)
    batches = max(1, total // world_size // (seq_len * batch_size))
    if max_batches is not None:
        batches = min(batches, max_batches)
    for _ in range(batches):
        batch = {k: v.to(device) for k, v in next(loader).items()}
        logits, _ = model(batch["tokens"], batch["levels"])
        n, c = byte_nats(logits, batch["targets"], batch["target_bytes"])
        nats += n.double().cpu()
        count += c.double().cpu()
    loader.close()
    totals = torch.stack([nats, count])
    if reduce is not None:
        reduce(totals)
    model.train(was_training)
    return {"bpb": float(totals[0] / totals[1].clamp(min=1)) / math.log(2), "bytes": int(totals[1])}
