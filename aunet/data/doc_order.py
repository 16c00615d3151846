"""The order in which one rank reads one source's documents.

`rank_rows` is the one rank split, used by training and evaluation alike: rank r of W owns the
documents whose global index (manifest order) is r mod W, disjoint and complete across ranks,
and balanced to one document. Training reads its share through `DocOrder`: each epoch visits
the units in a seeded random order and passes the documents through a seeded shuffle buffer,
as a resumable state. Evaluation reads it once, in manifest order (`SequentialOrder`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aunet.data.shard_source import ShardSource


def rank_rows(source: ShardSource, unit: int, rank: int, world_size: int) -> np.ndarray:
    """Rows of `unit` that rank `rank` of `world_size` owns."""
    first = int(source.first_doc[unit])
    rows = np.arange(source.unit_rows[unit], dtype=np.int64)
    return rows[(first + rows) % world_size == rank]


def rank_documents(source: ShardSource, rank: int, world_size: int) -> Iterator[tuple[int, int]]:
    """(unit, row) of every document the rank owns, in manifest order."""
    for unit in range(source.units):
        for row in rank_rows(source, unit, rank, world_size).tolist():
            yield unit, row


class SequentialOrder:
    """A rank's documents once, in manifest order (for `Packer`; ends with StopIteration)."""

    def __init__(self, source: ShardSource, rank: int, world_size: int):
        self.source = source
        self._refs = rank_documents(source, rank, world_size)

    def next(self) -> tuple[int, int]:
        return next(self._refs)


class DocOrder:
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
        self._order = self._unit_order(0)
        self._owned: dict[int, np.ndarray] = {}
        if not any(self._rows_of_unit(u).size for u in range(source.units)):
            raise ValueError(f"data source {source.directory}: no documents for rank {rank} of {world_size}")

    def _unit_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 2]).permutation(self.source.units)

    def _rows_of_unit(self, unit: int) -> np.ndarray:
        if unit not in self._owned:
            self._owned[unit] = rank_rows(self.source, unit, self.rank, self.world)
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
