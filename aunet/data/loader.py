"""Batches of packed windows from weighted sources, prefetched, with an exact resumable state.

The settings are the config's `data` section (`DataArgs`) itself: its sources (shard
directories, under `root_dir`), sequence length, batch size, BOS/EOS, seed, shuffle buffer,
prefetching (`load_async`, `prefetch_size`) and shard verification. What a config cannot know
comes as arguments: this process's rank, whether to pin memory, how a shard directory is
read (`open_source`: bytes by default; the BPE baseline passes its tokenizing reader), and the
model the batches are for: given its `ModelArgs`, each batch also says how many positions every
stage needs (`aunet.model.stage_lengths`), computed here, on the prefetch thread, from levels
that are on the host anyway.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading

import numpy as np
import torch

from aunet.config import DataArgs, ModelArgs
from aunet.data.doc_order import DocOrder
from aunet.data.packing import Packer
from aunet.data.shard_source import ShardSource, SourceOpener
from aunet.data.sources import source_path
from aunet.model.lengths import batch_stage_fields


def source_fingerprint(source) -> str:
    """What a loader state's (record batch, row) numbers refer to: the manifest's shards, each
    with its checksum and record-batch plan."""
    shards = [[s.path, s.checksum, s.documents, s.text_bytes, s.batches] for s in source.manifest.shards]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:32]


class PackedLoader:
    """Iterates batches: dicts of `tokens`, `targets` (int64 [B, S]), `levels`,
    `target_levels` (uint8 [B, S]) and `target_bytes` (int32 [B, S]: bytes of text each target
    stands for; 0 for BOS/EOS); with a `model`, also `stage_lengths` (a list of ints: what
    `HierarchicalTransformer.forward` runs each stage on) and `stage_counts` (numpy int64
    [B, L + 1]: every row's real positions per stage) and `flops` ((useful, executed) training
    FLOPs of the batch). Only the tensors go to the device. `state_dict()` describes the position after the last
    batch handed out (not the last one prefetched), so a restored loader continues with
    exactly the next batch."""

    def __init__(self, data: DataArgs, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 open_source: SourceOpener = ShardSource, model: ModelArgs | None = None):
        """`pin_memory`: hand out batches in page-locked memory (on GPUs), so that
        `.to(device, non_blocking=True)` really overlaps the copy with compute; pinned on the
        prefetch thread, off the training loop."""
        if data.tokenizer.name != "bytes" and open_source is ShardSource:
            raise ValueError(f"data.tokenizer.name = {data.tokenizer.name}: pass the loader that tokenizer's reader "
                             "(aunet.baselines.tokenized_source.source_opener)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size {world_size})")
        self.data, self.rank, self.world_size, self.pin_memory, self.model = data, rank, world_size, pin_memory, model
        # Directory -> weight; sources weighted 0 are not read (as in the trainer's `source_paths`).
        self.paths = {str(source_path(data.root_dir, name)): float(w) for name, w in data.sources.items() if w > 0}
        if not self.paths:
            raise ValueError("data.sources: at least one shard directory with a positive weight is needed")
        self.prefetch = data.prefetch_size if data.load_async else 0
        self.sources = [open_source(p, data.verify_shards) for p in self.paths]
        self.token_bytes = torch.from_numpy(self.sources[0].token_bytes)
        self._token_bytes = np.ascontiguousarray(self.sources[0].token_bytes)
        depths = {s.depth for s in self.sources}
        if len(depths) != 1:
            raise ValueError(f"data.sources: the shard directories were segmented with different strategy depths {sorted(depths)}")
        for src in self.sources:
            if src.manifest.documents_written and not any(s.text_bytes for s in src.manifest.shards) and not (data.add_bos or data.add_eos):
                raise ValueError(f"data source {src.directory}: every document is empty and BOS/EOS are off: no tokens")
        weights = np.array(list(self.paths.values()), dtype=np.float64)
        self.weights = weights / weights.sum()
        self.cumulative = np.cumsum(self.weights)[:-1]  # source i when the draw falls in its slice
        self.packers = [
            Packer(DocOrder(src, rank, world_size, data.seed + 1000 * i, data.shuffle_buffer), data.seq_len, data.add_bos, data.add_eos)
            for i, src in enumerate(self.sources)
        ]
        self.fingerprints = [source_fingerprint(src) for src in self.sources]
        self.mix = np.random.default_rng([data.seed, rank, 3])
        self.batches = 0
        self._state = self._snapshot()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ producing

    def _produce(self) -> tuple[dict, dict]:
        B, S = self.data.batch_size, self.data.seq_len
        tokens = np.empty((B, S + 1), dtype=np.int64)
        levels = np.empty((B, S + 1), dtype=np.uint8)
        for b in range(B):
            source = int(np.searchsorted(self.cumulative, self.mix.random(), side="right"))
            tokens[b], levels[b], _ = self.packers[source].next_window()
        self.batches += 1
        batch = {
            "tokens": torch.from_numpy(tokens[:, :-1]),
            "targets": torch.from_numpy(tokens[:, 1:]),
            "levels": torch.from_numpy(levels[:, :-1]),
            "target_levels": torch.from_numpy(levels[:, 1:]),
            # numpy's take: torch's indexing of a [B, S] int64 index costs ~7 ms a batch on the CPU.
            "target_bytes": torch.from_numpy(np.take(self._token_bytes, tokens[:, 1:])),
        }
        if self.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        if self.model is not None:
            batch.update(batch_stage_fields(levels[:, :-1], self.model))
        return batch, self._snapshot()

    def _snapshot(self) -> dict:
        return {
            "batches": self.batches,
            "mix": self.mix.bit_generator.state,
            "sources": [p.snapshot() for p in self.packers],
            "rank": self.rank,
            "world_size": self.world_size,
            "source_paths": list(self.paths),
            "source_fingerprints": self.fingerprints,
        }

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._produce()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced to the consumer, not lost in the thread
            self._queue.put(e)

    # ------------------------------------------------------------------ consuming

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.prefetch <= 0:
            batch, self._state = self._produce()
            return batch
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._run, name="aunet-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, self._state = item
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def state_dict(self) -> dict:
        """Plain JSON-able state after the last batch handed out."""
        return {**self._state, "sources": [Packer.as_state(s) for s in self._state["sources"]]}

    def load_state_dict(self, state: dict) -> None:
        if self._thread is not None:
            raise RuntimeError("load_state_dict before the first batch (the prefetch thread has started)")
        mine = (self.rank, self.world_size, list(self.paths))
        theirs = (state["rank"], state["world_size"], state["source_paths"])
        if mine != theirs:
            raise ValueError(f"loader state is for rank/world/sources {theirs}, this loader is {mine}")
        # A state indexes documents by (record batch, row): on other shards the same numbers
        # name other documents. States saved before fingerprints existed have none to compare.
        saved = state.get("source_fingerprints")
        if saved is not None:
            changed = [path for path, a, b in zip(self.paths, saved, self.fingerprints) if a != b]
            if changed:
                raise ValueError(f"loader state is for other shards in {', '.join(changed)}: the manifest's shard list "
                                 "(paths, checksums, record batches) differs from the one the state was saved on (the data "
                                 "was re-segmented or changed); resume on that data, or start a new run")
        self.batches = state["batches"]
        self.mix.bit_generator.state = state["mix"]
        for packer, s in zip(self.packers, state["sources"]):
            packer.load_state_dict(s)
        self._state = self._snapshot()
