"""Bits per byte of a model on held-out shards (SPEC section 4): summed byte nats / bytes / ln 2;
what the trainer logs as val_bpb and what `aunet eval` reports.

Every held-out byte is scored exactly once (`aunet.data.heldout`). Under ZeRO-3 every rank must
run the same number of forward passes (parameters are gathered collectively), so a rank with
fewer windows runs empty batches (nothing scored) until the longest is done. Sources are scored
in full whatever their training weights; `max_batches` caps the batches per rank (then the
share scored is the first part of each rank's documents).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from aunet.baselines.tokenized_source import source_opener
from aunet.data.heldout import empty_batch, eval_batches, rank_stream_length
from aunet.model import byte_nats, stage_lengths


@torch.no_grad()
def heldout_bpb(model, sources: dict[str, float], seq_len: int, batch_size: int, max_batches: int | None,
                rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu", reduce=None,
                tokenizer: str | None = None, add_bos: bool = True, add_eos: bool = True, verify_shards: bool = False) -> dict:
    """{"bpb", "bytes"} over every byte of the held-out `sources` (shard directories; weights
    are ignored). `reduce` is torch.distributed.all_reduce when several ranks evaluate
    together. `tokenizer`: a BPE model's tokenizer file (bpb then counts the bytes its tokens
    stand for). `verify_shards`: check each shard's checksum (XXH3-128; SHA-256 in older directories) as it is opened."""
    open_source = source_opener(tokenizer)
    opened = [open_source(path, verify_shards) for path in sources]
    windows = sum(math.ceil(max(rank_stream_length(s, rank, world_size, add_bos, add_eos) - 1, 0) / seq_len) for s in opened)
    # Collectives get tensors on the model's device (NCCL takes no host tensors); the sums stay
    # there until the one read at the end.
    steps = torch.tensor([float(math.ceil(windows / batch_size))], dtype=torch.float64, device=device)
    if reduce is not None:
        reduce(steps, op=dist.ReduceOp.MAX)
    steps = int(steps.item()) if max_batches is None else min(int(steps.item()), max_batches)

    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    batches = eval_batches(opened, rank, world_size, seq_len, batch_size, add_bos, add_eos)
    args = getattr(model, "module", model).args  # a DeepSpeed engine wraps the model
    for _ in range(steps):
        batch = next(batches, None) or empty_batch(batch_size, seq_len)
        lengths = stage_lengths(batch["levels"], args)  # on the host, before the copy
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        logits, _ = model(batch["tokens"], batch["levels"], stage_lengths=lengths)
        totals += torch.stack([t.to(torch.float64) for t in byte_nats(logits, batch["targets"], batch["target_bytes"])])
    if reduce is not None:
        reduce(totals)
    nats, count = totals.tolist()
    model.train(was_training)
    return {"bpb": nats / max(count, 1.0) / math.log(2), "bytes": int(count)}
