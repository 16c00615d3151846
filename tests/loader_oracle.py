"""The training loader's document order and packing as they were before per-document work was
cut down (one numpy scalar and generator call per document, one copy per document, torch
indexing for target bytes): the oracle its batches must equal byte for byte, and the baseline
of benches/bench_loader.py.
"""

from __future__ import annotations

import numpy as np
import torch

from aunet.data.doc_order import RankShare
from aunet.data.shard_source import ShardSource
from aunet.data.loader import PackedLoader
from aunet.model.lengths import batch_stage_fields


class ReferenceDocOrder:
    """`aunet.data.doc_order.DocOrder` as it was: a numpy buffer and one generator call per document."""

    def __init__(self, source: ShardSource, rank: int, world_size: int, seed: int, shuffle_buffer: int):
        self.source, self.rank, self.world, self.seed = source, rank, world_size, seed
        self.buffer_size = max(1, shuffle_buffer)
        self.epoch = 0
        self.unit_cursor = 0  # position in this epoch's unit order
        self.row_cursor = 0  # index into the current unit's owned rows
        # Shuffle buffer of (unit, row) rows; numpy so that snapshotting it per batch is a memcpy.
        self.buffer = np.empty((self.buffer_size, 2), dtype=np.int64)
        self.filled = 0
        self.rng = np.random.default_rng([seed, rank, 1])
        self.share = RankShare(source, rank, world_size)
        if self.share.end == self.share.start:
            raise ValueError(f"data source {source.directory}: no documents for rank {rank} of {world_size}")
        self._order = self._unit_order(0)
        self._owned: dict[int, np.ndarray] = {}

    def _unit_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 2]).permutation(self.share.units)

    def _rows_of_unit(self, unit: int) -> np.ndarray:
        if unit not in self._owned:
            self._owned[unit] = self.share.rows(unit)
        return self._owned[unit]

    def _next_owned(self) -> tuple[int, int]:
        """The next document of this rank in reading order (before shuffling)."""
        while True:
            if self.unit_cursor == len(self._order):
                self.epoch += 1
                self.unit_cursor, self.row_cursor = 0, 0
                self._order = self._unit_order(self.epoch)
            unit = int(self._order[self.unit_cursor])
            rows = self._rows_of_unit(unit)
            if self.row_cursor < rows.size:
                self.row_cursor += 1
                return unit, int(rows[self.row_cursor - 1])
            self.unit_cursor += 1
            self.row_cursor = 0

    def next(self) -> tuple[int, int]:
        while self.filled < self.buffer_size:
            self.buffer[self.filled] = self._next_owned()
            self.filled += 1
        i = int(self.rng.integers(self.filled))
        unit, row = int(self.buffer[i, 0]), int(self.buffer[i, 1])
        self.filled -= 1
        self.buffer[i] = self.buffer[self.filled]
        return unit, row

    def snapshot(self) -> tuple:
        """A cheap copy of the state (taken after every batch); `as_state` makes it JSON."""
        return (self.epoch, self.unit_cursor, self.row_cursor, self.buffer[: self.filled].copy(), self.rng.bit_generator.state)

    @staticmethod
    def as_state(snap: tuple) -> dict:
        epoch, unit_cursor, row_cursor, buffer, rng = snap
        return {"epoch": epoch, "unit_cursor": unit_cursor, "row_cursor": row_cursor, "buffer": buffer.tolist(), "rng": rng}

    def state_dict(self) -> dict:
        return self.as_state(self.snapshot())

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.unit_cursor, self.row_cursor = state["epoch"], state["unit_cursor"], state["row_cursor"]
        refs = np.array(state["buffer"], dtype=np.int64).reshape(-1, 2)
        self.filled = len(refs)
        self.buffer[: self.filled] = refs
        self.rng.bit_generator.state = state["rng"]
        self._order = self._unit_order(self.epoch)


class ReferencePacker:
    """`aunet.data.packing.Packer` as it was: one copy per document into the window."""

    def __init__(self, order: DocOrder | SequentialOrder, seq_len: int, add_bos: bool, add_eos: bool):
        self.order, self.seq_len, self.add_bos, self.add_eos = order, seq_len, add_bos, add_eos
        self.depth = order.source.depth
        self.bos, self.eos = order.source.bos_id, order.source.eos_id
        self.pending: list[tuple[int, int]] = []  # documents drawn and not yet fully emitted
        self.offset = 0  # tokens of pending[0] already behind the next window's start

    def _doc_len(self, ref: tuple[int, int]) -> int:
        return self.order.source.length(*ref) + int(self.add_bos) + int(self.add_eos)

    def _copy(self, ref: tuple[int, int], start: int, take: int, tokens: np.ndarray, levels: np.ndarray, at: int) -> None:
        """Tokens start..start+take of the document's [BOS] + bytes + [EOS] into tokens[at:]."""
        text, mask = self.order.source.document(*ref)
        head = int(self.add_bos)
        end = start + take
        if head and start == 0:
            tokens[at], levels[at] = self.bos, self.depth
            at, start = at + 1, 1
        lo, hi = start - head, min(end - head, len(text))
        if hi > lo:
            tokens[at : at + hi - lo] = text[lo:hi]
            levels[at : at + hi - lo] = mask[lo:hi]
            at += hi - lo
        if self.add_eos and end == len(text) + head + 1:
            tokens[at], levels[at] = self.eos, 0

    def next_window(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Tokens and levels of the next window (seq_len + 1 each), and how many of its targets
        are real: seq_len, fewer only in the padded last window of a finite order. Raises
        StopIteration once a finite order has no target left."""
        need = self.seq_len + 1
        tokens = np.empty(need, dtype=np.int64)
        levels = np.empty(need, dtype=np.uint8)
        have, i = 0, 0
        while have < need:
            if i == len(self.pending):
                try:
                    self.pending.append(self.order.next())
                except StopIteration:
                    return self._last_window(tokens, levels, have)
            start = self.offset if i == 0 else 0
            take = min(self._doc_len(self.pending[i]) - start, need - have)
            if take > 0:
                self._copy(self.pending[i], start, take, tokens, levels, have)
            have += take
            i += 1
        # Advance by seq_len: the window's last token opens the next one.
        advance = self.seq_len
        while True:
            length = self._doc_len(self.pending[0]) - self.offset
            if advance < length:
                self.offset += advance
                break
            advance -= length
            self.pending.pop(0)
            self.offset = 0
        return tokens, levels, self.seq_len

    def _last_window(self, tokens: np.ndarray, levels: np.ndarray, have: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The order ran out after `have` tokens: pad them into a last window, or stop when
        one token (already the previous window's last target) or none is left."""
        self.pending, self.offset = [], 0
        if have <= 1:
            raise StopIteration
        tokens[have:], levels[have:] = 0, 0
        return tokens, levels, have - 1

    def snapshot(self) -> tuple:
        return (list(self.pending), self.offset, self.order.snapshot())

    @staticmethod
    def as_state(snap: tuple) -> dict:
        pending, offset, order = snap
        return {"pending": [list(r) for r in pending], "offset": offset, "order": ReferenceDocOrder.as_state(order)}

    def state_dict(self) -> dict:
        return self.as_state(self.snapshot())

    def load_state_dict(self, state: dict) -> None:
        self.pending = [tuple(r) for r in state["pending"]]
        self.offset = state["offset"]
        self.order.load_state_dict(state["order"])


class ReferenceLoader(PackedLoader):
    """`PackedLoader` with the previous order, packer and target-bytes lookup."""

    def __init__(self, data, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        self.packers = [
            ReferencePacker(ReferenceDocOrder(src, self.rank, self.world_size, data.seed + 1000 * i, data.shuffle_buffer),
                            data.seq_len, data.add_bos, data.add_eos)
            for i, src in enumerate(self.sources)
        ]
        self._state = self._snapshot()

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
            "target_bytes": self.token_bytes[torch.from_numpy(tokens[:, 1:])],
        }
        if self.model is not None:
            batch.update(batch_stage_fields(levels[:, :-1], self.model))
        return batch, self._snapshot()
