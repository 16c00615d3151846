"""Batches of packed windows from weighted sources, prefetched, with an exact resumable state."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from aunet.data.doc_order import DocOrder
from aunet.data.packing import Packer
from aunet.data.shard_source import open_sources


@dataclass
class LoaderArgs:
    sources: dict[str, float]
    """Shard directories (from aunet-segment) and their sampling weights (any positive scale)."""
    seq_len: int = 8192
    batch_size: int = 1
    add_bos: bool = True
    add_eos: bool = True
    seed: int = 777
    shuffle_buffer: int = 1024
    """Documents held in each source's shuffle buffer (1 = no shuffling beyond unit order)."""
    prefetch: int = 4
    """Batches prepared ahead on a background thread (0 = produce on the caller's thread)."""
    rank: int = 0
    world_size: int = 1
    tokenizer: str | None = None
    """A BPE tokenizer file (`aunet.baselines.bpe`): documents are read as its token ids (the BPE baseline)."""
    pin_memory: bool = False
    """Hand out batches in page-locked memory (on GPUs), so that `.to(device, non_blocking=True)`
    really overlaps the copy with compute; pinned on the prefetch thread, off the training loop."""
    verify_shards: bool = False
    """Check each shard's SHA-256 against its manifest when it is first opened
    (`data.verify_shards`; sizes, rows and level ranges are always checked)."""

    def __post_init__(self):
        if not self.sources:
            raise ValueError("data.sources: at least one shard directory is needed")
        for path, weight in self.sources.items():
            if not (isinstance(weight, (int, float)) and weight > 0):
                raise ValueError(f"data.sources[{path!r}]: weight must be a positive number, got {weight!r}")
        if self.seq_len < 1 or self.batch_size < 1:
            raise ValueError(f"data.seq_len and data.batch_size must be >= 1 (got {self.seq_len}, {self.batch_size})")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size {self.world_size})")


class PackedLoader:
    """Iterates batches: dicts of `tokens`, `targets` (int64 [B, S]), `levels`,
    `target_levels` (uint8 [B, S]) and `target_bytes` (int32 [B, S]: bytes of text each target
    stands for; 0 for BOS/EOS). `state_dict()` describes the position after the last
    batch handed out (not the last one prefetched), so a restored loader continues with
    exactly the next batch."""

    def __init__(self, args: LoaderArgs):
        self.args = args
        self.sources = open_sources(args.sources, args.tokenizer, args.verify_shards)
        self.token_bytes = torch.from_numpy(self.sources[0].token_bytes)
        depths = {s.depth for s in self.sources}
        if len(depths) != 1:
            raise ValueError(f"data.sources: the shard directories were segmented with different strategy depths {sorted(depths)}")
        for src in self.sources:
            if src.manifest.documents_written and not any(s.text_bytes for s in src.manifest.shards) and not (args.add_bos or args.add_eos):
                raise ValueError(f"data source {src.directory}: every document is empty and BOS/EOS are off: no tokens")
        weights = np.array(list(args.sources.values()), dtype=np.float64)
        self.weights = weights / weights.sum()
        self.cumulative = np.cumsum(self.weights)[:-1]  # source i when the draw falls in its slice
        self.packers = [
            Packer(DocOrder(src, args.rank, args.world_size, args.seed + 1000 * i, args.shuffle_buffer), args.seq_len, args.add_bos, args.add_eos)
            for i, src in enumerate(self.sources)
        ]
        self.mix = np.random.default_rng([args.seed, args.rank, 3])
        self.batches = 0
        self._state = self._snapshot()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ producing

    def _produce(self) -> tuple[dict, dict]:
        B, S = self.args.batch_size, self.args.seq_len
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
            "target_bytes": self.token_bytes[torch.from_numpy(tokens[:, 1:])],
        }
        if self.args.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch, self._snapshot()

    def _snapshot(self) -> dict:
        return {
            "batches": self.batches,
            "mix": self.mix.bit_generator.state,
            "sources": [p.snapshot() for p in self.packers],
            "rank": self.args.rank,
            "world_size": self.args.world_size,
            "source_paths": list(self.args.sources),
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
        if self.args.prefetch <= 0:
            batch, self._state = self._produce()
            return batch
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.args.prefetch)
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
        mine = (self.args.rank, self.args.world_size, list(self.args.sources))
        theirs = (state["rank"], state["world_size"], state["source_paths"])
        if mine != theirs:
            raise ValueError(f"loader state is for rank/world/sources {theirs}, this loader is {mine}")
        self.batches = state["batches"]
        self.mix.bit_generator.state = state["mix"]
        for packer, s in zip(self.packers, state["sources"]):
            packer.load_state_dict(s)
        self._state = self._snapshot()
