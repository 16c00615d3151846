"""`aunet eval`: bits per byte of an exported model on held-out shards or raw text (SPEC
section 4), scored by the trainer's own validation (`aunet.training.validate.heldout_bpb`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from aunet.data.contract import check_shards
from aunet.inference.export import load_model
from aunet.segment import segment_corpus
from aunet.segment.layout import is_shard_dir
from aunet.segment.readers import detect_format
from aunet.inference.placement import pick_device, pick_dtype
from aunet.training.validate import heldout_bpb

__all__ = ["evaluate_model", "heldout_bpb"]


def evaluate_model(model_dir: str | Path, data: list[str], batch_size: int = 8, max_batches: int | None = None,
                   allow_shard_mismatch: bool = False, device: str | None = None, dtype: str | None = None) -> dict:
    """`aunet eval`: bits per byte of the exported model in `model_dir` on each item of `data`
    and overall, as {"model", "sources": {item: {"bpb", "bytes"}}, "overall": {"bpb", "bytes"}};
    "bytes" is the number of bytes scored, and "bpb" is None where it is 0 (an empty file, or
    every document rejected).

    An item is an `aunet-segment` directory, a corpus in any `segment_corpus` input format, or
    a plain file (one document, its bytes as they are, valid UTF-8 or not), segmented with the
    model's strategy into a temporary folder. Shard directories must have been segmented with
    the model's strategy list and depth (`aunet.data.contract`), unless `allow_shard_mismatch`.
    `device` and `dtype`: see `aunet.inference.placement` (default: the GPU in the config's
    dtype when there is one)."""
    model, cfg = load_model(model_dir)
    where = pick_device(device)
    model = model.to(where, pick_dtype(where, cfg.eval.generator.dtype, dtype))
    tokenizer = cfg.data.tokenizer.bpe_file
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, item in enumerate(data):
            path = Path(item)
            if is_shard_dir(path):
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
            results[item] = heldout_bpb(model, {str(path): 1.0}, cfg.data.seq_len, batch_size, max_batches, device=where,
                                        tokenizer=tokenizer,
                                        add_bos=cfg.data.add_bos, add_eos=cfg.data.add_eos)
    for r in results.values():
        if r["bytes"] == 0:
            r["bpb"] = None  # nothing scored: no bpb at all, not 0.0
    total_bytes = sum(r["bytes"] for r in results.values())
    overall = sum(r["bpb"] * r["bytes"] for r in results.values() if r["bytes"]) / total_bytes if total_bytes else None
    return {"model": str(model_dir), "sources": results, "overall": {"bpb": overall, "bytes": total_bytes}}
