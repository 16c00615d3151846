"""The order in which one rank reads one source's documents.

`RankShare` is the one rank split, used by training and evaluation alike: rank r of W owns one
contiguous run of documents (manifest order), cut where the running total of bytes reaches
r/W of the source, so the ranks together read the corpus once and each touches about 1/W of
its bytes (pages of shards outside its share are never read). Shares are disjoint and complete,
and every rank gets at least one document. Training reads its share through `DocOrder`: each
epoch visits the share's units in a seeded random order and passes the documents through a
seeded shuffle buffer, as a resumable state. Evaluation reads it once, in order
(`SequentialOrder`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aunet.data.shard_source import ShardSource


class RankShare:
    """Documents [start, end) of `source` for rank `rank` of `world_size`."""

    def __init__(self, source, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.source, self.rank, self.world = source, rank, world_size
        self._unit_bytes = None
        self.start, self.end = self._boundary(rank), self._boundary(rank + 1)
        first = np.asarray(source.first_doc)
        self.first_unit = int(np.searchsorted(first, self.start, side="right")) - 1
        self.last_unit = int(np.searchsorted(first, self.end - 1, side="right")) - 1 if self.end > self.start else self.first_unit - 1

    def _boundary(self, r: int) -> int:
        """First document of rank r: where the bytes before it (one extra per document, so
        empty documents count) reach r/W of the total; at least one document per rank when
        there are as many documents as ranks (else ranks past the last document get none)."""
        src, W, D = self.source, self.world, self.source.documents
        if D < W or r in (0, W):
            return min(r, D) if r < W else D
        if self._unit_bytes is None:
            sizes = np.array([src.unit_text_bytes(u) for u in range(src.units)], dtype=np.int64) + np.asarray(src.unit_rows)
            self._unit_bytes = np.concatenate([[0], np.cumsum(sizes)])
        before = self._unit_bytes
        target = before[-1] * r / W
        unit = min(int(np.searchsorted(before, target, side="right")) - 1, src.units - 1)
        inside = np.cumsum(src.doc_lengths(unit) + 1) + before[unit]  # bytes up to each row's end
        row = int(np.searchsorted(inside, target, side="left"))  # the row that crosses the target
        doc = int(src.first_doc[unit]) + min(row + 1, int(src.unit_rows[unit]))
        return min(max(doc, r), D - (W - r))

    @property
    def units(self) -> np.ndarray:
        """The units holding this share's documents, in manifest order."""
        return np.arange(self.first_unit, self.last_unit + 1, dtype=np.int64)

    def rows(self, unit: int) -> np.ndarray:
        """Rows of `unit` in this share."""
        first = int(self.source.first_doc[unit])
        lo, hi = max(self.start - first, 0), min(self.end - first, int(self.source.unit_rows[unit]))
        return np.arange(lo, max(lo, hi), dtype=np.int64)

    def documents(self) -> Iterator[tuple[int, int]]:
        """(unit, row) of every document of the share, in manifest order."""
        for unit in self.units.tolist():
            for row in self.rows(unit).tolist():
                yield unit, row


class SequentialOrder:
    """A rank's documents once, in manifest order (for `Packer`; ends with StopIteration)."""

    def __init__(self, source: ShardSource, rank: int, world_size: int):
        self.source = source
        self._refs = RankShare(source, rank, world_size).documents()

    def next(self) -> tuple[int, int]:
        return next(self._refs)


#: Shuffle-buffer draws taken from the generator at once. A bulk draw of integers(n) equals n
#: single draws, generator state included (PCG64 keeps its spare 32-bit half in its state), so
#: the order is that of one draw per document; a snapshot replays the draws used so far.
DRAWS_AT_ONCE = 256


class DocOrder:
    """A rank's documents, endlessly: units in a seeded order per epoch, rows through a seeded
    shuffle buffer. Per document this is a few list operations (no numpy scalar, no generator
    call): what a corpus of short documents spends its time on."""

    def __init__(self, source: ShardSource, rank: int, world_size: int, seed: int, shuffle_buffer: int):
        self.source, self.rank, self.world, self.seed = source, rank, world_size, seed
        self.buffer_size = max(1, shuffle_buffer)
        self.epoch = 0
        self.unit_cursor = 0  # position in this epoch's unit order
        self.row_cursor = 0  # index into the current unit's owned rows
        # Shuffle buffer of (unit, row), as two lists (made arrays only for a snapshot).
        self._units: list[int] = []
        self._rows: list[int] = []
        self.rng = np.random.default_rng([seed, rank, 1])
        self._draws: list[int] = []  # drawn ahead; the next one is _draws[_used]
        self._used = 0
        self._rng_before = self.rng.bit_generator.state  # the state before _draws
        self.share = RankShare(source, rank, world_size)
        if self.share.end == self.share.start:
            raise ValueError(f"data source {source.directory}: no documents for rank {rank} of {world_size}")
        self._order = self._unit_order(0).tolist()
        self._owned: dict[int, list[int]] = {}

    @property
    def filled(self) -> int:
        return len(self._units)

    @property
    def buffer(self) -> np.ndarray:
        """The documents in the shuffle buffer, [filled, 2] (unit, row)."""
        return np.array([self._units, self._rows], dtype=np.int64).T.reshape(-1, 2)

    def _unit_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 2]).permutation(self.share.units)

    def _rows_of_unit(self, unit: int) -> list[int]:
        if unit not in self._owned:
            self._owned[unit] = self.share.rows(unit).tolist()
        return self._owned[unit]

    def _next_owned(self) -> tuple[int, int]:
        """The next document of this rank in reading order (before shuffling)."""
        while True:
            if self.unit_cursor == len(self._order):
                self.epoch += 1
                self.unit_cursor, self.row_cursor = 0, 0
                self._order = self._unit_order(self.epoch).tolist()
            unit = self._order[self.unit_cursor]
            rows = self._rows_of_unit(unit)
            if self.row_cursor < len(rows):
                self.row_cursor += 1
                return unit, rows[self.row_cursor - 1]
            self.unit_cursor += 1
            self.row_cursor = 0

    def next(self) -> tuple[int, int]:
        units, rows = self._units, self._rows
        while len(units) < self.buffer_size:
            unit, row = self._next_owned()
            units.append(unit)
            rows.append(row)
        # Every draw is integers(buffer_size): the buffer is full when one is made.
        if self._used == len(self._draws):
            self._rng_before = self.rng.bit_generator.state
            self._draws = self.rng.integers(self.buffer_size, size=DRAWS_AT_ONCE).tolist()
            self._used = 0
        i = self._draws[self._used]
        self._used += 1
        ref = units[i], rows[i]
        units[i], rows[i] = units[-1], rows[-1]
        units.pop()
        rows.pop()
        return ref

    def _rng_state(self) -> dict:
        """The generator's state after the draws used so far (as if drawn one at a time)."""
        if self._used == len(self._draws):
            return self.rng.bit_generator.state
        replay = np.random.Generator(type(self.rng.bit_generator)())
        replay.bit_generator.state = self._rng_before
        replay.integers(self.buffer_size, size=self._used)
        return replay.bit_generator.state

    def snapshot(self) -> tuple:
        """A cheap copy of the state (taken after every batch); `as_state` makes it JSON."""
        return (self.epoch, self.unit_cursor, self.row_cursor, self.buffer, self._rng_state())

    @staticmethod
    def as_state(snap: tuple) -> dict:
        epoch, unit_cursor, row_cursor, buffer, rng = snap
        return {"epoch": epoch, "unit_cursor": unit_cursor, "row_cursor": row_cursor, "buffer": buffer.tolist(), "rng": rng}

    def state_dict(self) -> dict:
        return self.as_state(self.snapshot())

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.unit_cursor, self.row_cursor = state["epoch"], state["unit_cursor"], state["row_cursor"]
        refs = np.array(state["buffer"], dtype=np.int64).reshape(-1, 2)
        self._units, self._rows = refs[:, 0].tolist(), refs[:, 1].tolist()
        self.rng.bit_generator.state = state["rng"]
        self._draws, self._used = [], 0
        self._order = self._unit_order(self.epoch).tolist()
