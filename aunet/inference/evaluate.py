"""Bits per byte of a model on held-out shards (SPEC section 4): summed byte nats / bytes / ln 2.

Every held-out byte is scored exactly once. Each rank takes its share of the documents (the
training loader's rank split, `aunet.data.doc_order.RankShare`), in manifest order, and packs
them with the training packer ([BOS] + text + [EOS] per document, windows of seq_len + 1
tokens that overlap by one, so no target is skipped); the last window of each rank is padded
and its padding is not scored. Under ZeRO-3 every rank must run the same number of forward
passes (parameters are gathered collectively), so a rank with fewer windows runs empty batches
(nothing scored) until the longest is done. Sources are scored in full whatever their training
weights; `max_batches` caps the batches per rank (then the share scored is the first part of
each rank's documents).

`evaluate_model` is `aunet eval`: an exported model on shard directories or raw text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from aunet.data.doc_order import RankShare, SequentialOrder
from aunet.data.packing import Packer

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
                tokenizer: str | None = None, add_bos: bool = True, add_eos: bool = True, verify_shards: bool = False) -> dict:
    """{"bpb", "bytes"} over every byte of the held-out `sources` (shard directories; weights
    are ignored). `reduce` is torch.distributed.all_reduce when several ranks evaluate
    together. `tokenizer`: a BPE model's tokenizer file (bpb then counts the bytes its tokens
    stand for). `verify_shards`: check each shard's SHA-256 as it is opened."""
    from aunet.data.shard_source import open_sources
    from aunet.model import byte_nats

    opened = open_sources(sources, tokenizer, verify_shards)
    windows = sum(math.ceil(max(rank_stream_length(s, rank, world_size, add_bos, add_eos) - 1, 0) / seq_len) for s in opened)
    # Collectives get tensors on the model's device (NCCL takes no host tensors); the sums stay
    # there until the one read at the end.
    steps = torch.tensor([float(math.ceil(windows / batch_size))], dtype=torch.float64, device=device)
    if reduce is not None:
        import torch.distributed as dist

        reduce(steps, op=dist.ReduceOp.MAX)
    steps = int(steps.item()) if max_batches is None else min(int(steps.item()), max_batches)

    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    batches = eval_batches(opened, rank, world_size, seq_len, batch_size, add_bos, add_eos)
    for _ in range(steps):
        batch = next(batches, None) or _empty_batch(batch_size, seq_len)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        logits, _ = model(batch["tokens"], batch["levels"])
        totals += torch.stack([t.to(torch.float64) for t in byte_nats(logits, batch["targets"], batch["target_bytes"])])
    if reduce is not None:
        reduce(totals)
    nats, count = totals.tolist()
    model.train(was_training)
    return {"bpb": nats / max(count, 1.0) / math.log(2), "bytes": int(count)}


def evaluate_model(model_dir: str | Path, data: list[str], batch_size: int = 8, max_batches: int | None = None,
                   allow_shard_mismatch: bool = False) -> dict:
    """`aunet eval`: bits per byte of the exported model in `model_dir` on each item of `data`
    and overall, as {"model", "sources": {item: {"bpb", "bytes"}}, "overall": {"bpb", "bytes"}};
    "bytes" is the number of bytes scored, and "bpb" is None where it is 0 (an empty file, or
    every document rejected).

    An item is an `aunet-segment` directory, a corpus in any `segment_corpus` input format, or
    a plain file (one document, its bytes as they are, valid UTF-8 or not), segmented with the
    model's strategy into a temporary folder. Shard directories must have been segmented with
    the model's strategy list and depth (`aunet.data.contract`), unless `allow_shard_mismatch`."""
    import sys
    import tempfile

    import pyarrow as pa

    from aunet.data.contract import check_shards

    from aunet.inference.export import load_model
    from aunet.segment import segment_corpus
    from aunet.segment.readers import detect_format

    model, cfg = load_model(model_dir)
    tokenizer = cfg.data.tokenizer.path if cfg.data.tokenizer.name == "bpe" else None
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, item in enumerate(data):
            path = Path(item)
            if (path / "manifest.json").is_file():
                strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
                for problem in check_shards([path], strategy, cfg.model.n_levels, allow_shard_mismatch,
                                            "pass --allow-shard-mismatch"):
                    print(f"aunet eval: warning: {problem}", file=sys.stderr)
            else:
                inputs = [item]
                if path.is_file() and detect_format(path) is None:
                    # An Arrow file with a binary text column carries the bytes unchanged; JSON
                    # could only hold invalid UTF-8 as escaped surrogates, 3 bytes each.
                    doc = Path(tmp) / f"txt{i}.arrow"
                    table = pa.table({"text": pa.array([path.read_bytes()], pa.large_binary())})
                    with pa.ipc.new_file(str(doc), table.schema) as writer:
                        writer.write_table(table)
                    inputs = [str(doc)]
                path = Path(tmp) / f"source{i}"
                segment_corpus(inputs, path, cfg.data.shard_strategy, on_error="skip")
            results[item] = heldout_bpb(model, {str(path): 1.0}, cfg.data.seq_len, batch_size, max_batches, tokenizer=tokenizer,
                                        add_bos=cfg.data.add_bos, add_eos=cfg.data.add_eos)
    for r in results.values():
        if r["bytes"] == 0:
            r["bpb"] = None  # nothing scored: no bpb at all, not 0.0
    total_bytes = sum(r["bytes"] for r in results.values())
    overall = sum(r["bpb"] * r["bytes"] for r in results.values() if r["bytes"]) / total_bytes if total_bytes else None
    return {"model": str(model_dir), "sources": results, "overall": {"bpb": overall, "bytes": total_bytes}}
