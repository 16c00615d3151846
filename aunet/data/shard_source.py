"""One shard directory, memory-mapped: documents by reference, without copies.

A *unit* is one record batch of one shard. Documents are referred to as (unit, row) pairs,
which is what the loader's state stores, so that a resumed run re-reads exactly the same
bytes.

Shards are checked against their manifest as they are used, so that damage stops the run with
the shard's path (and record batch and row) instead of training on it: opening a shard checks
its size (a stat) and, with `verify=True` (`data.verify_shards`), its checksum (a full read of
the file: XXH3-128, about 9 GB/s per core from the page cache, measured on 512 MiB; SHA-256,
1.3 GB/s, for directories written before XXH3-128); mapping a record batch
checks its row count and text bytes against the manifest's plan, that each row's mask is as long
as its text, and that no level exceeds the strategy's depth (one pass over mask bytes that the
loader reads anyway).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from aunet.config.model import BOS_ID, EOS_ID
from aunet.segment.shards import META_STRATEGY, Manifest, file_checksum, open_shard, split_checksum
from aunet.segment.strategy_order import describe_strategy, same_strategy


#: Bytes of text each id stands for: 1 per byte, 0 for BOS and EOS.
BYTE_TOKEN_BYTES = np.array([1] * 256 + [0, 0], dtype=np.int32)


class Source(Protocol):
    """What the loader, the packer and held-out evaluation read: one shard directory's
    documents by (unit, row), a unit being one record batch. `ShardSource` reads bytes and
    level masks; a baseline may read the same documents as other tokens
    (`aunet.baselines.tokenized_source.TokenizedSource`)."""

    directory: Path
    manifest: Manifest
    depth: int
    """Levels run 0..depth (0 for a flat reader)."""
    bos_id: int
    eos_id: int
    token_bytes: np.ndarray
    """Bytes of text each token id stands for (what bits per byte counts)."""
    unit_rows: list[int]
    first_doc: np.ndarray
    """Index of each unit's first document, plus the total."""

    @property
    def units(self) -> int: ...

    @property
    def documents(self) -> int: ...

    @property
    def total_tokens(self) -> int: ...

    def document(self, unit: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The document's tokens and levels."""

    def length(self, unit: int, row: int) -> int: ...

    def unit_text_bytes(self, unit: int) -> int:
        """What the rank split balances: a unit's text bytes (or tokens)."""

    def doc_lengths(self, unit: int) -> np.ndarray: ...


#: (shard directory, verify checksums) -> its `Source`: `ShardSource` itself, or a reader that
#: wraps one (`aunet.baselines.tokenized_source.source_opener`).
SourceOpener = Callable[[str | Path, bool], Source]


class ShardSource:
    bos_id, eos_id, token_bytes = BOS_ID, EOS_ID, BYTE_TOKEN_BYTES

    def __init__(self, directory: str | Path, verify: bool = False):
        self.directory = Path(directory)
        self.verify = verify
        if not self.directory.is_dir():
            raise FileNotFoundError(f"data source {self.directory}: no such directory")
        self.manifest = Manifest.load(self.directory)
        self.strategy = self.manifest.strategy
        self.depth = len(self.strategy)
        # A unit is one record batch. The plan (which shard, which batch, rows, text bytes) comes
        # from the manifest; a shard is opened, and a batch mapped, only when a document of it
        # is read. Opening early would cost more than a footer: Arrow's memory map advises the
        # kernel to read a record batch's whole body (MADV_WILLNEED) as soon as it is mapped,
        # so every rank would read every shard.
        self._plan: list[tuple[int, int]] = []
        self.unit_rows: list[int] = []
        self._unit_bytes: list[int] = []
        self._readers: dict[int, pa.ipc.RecordBatchFileReader] = {}
        self._units: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for i, shard in enumerate(self.manifest.shards):
            batches = shard.batches if shard.batches is not None else self._batches_from_file(i)
            for b, (rows, text_bytes) in enumerate(batches):
                self._plan.append((i, b))
                self.unit_rows.append(rows)
                self._unit_bytes.append(text_bytes)
        self.first_doc = np.concatenate([[0], np.cumsum(self.unit_rows)]).astype(np.int64)

    def _reader(self, shard: int) -> pa.ipc.RecordBatchFileReader:
        if shard not in self._readers:
            info = self.manifest.shards[shard]
            path = self.directory / info.path
            try:
                size = path.stat().st_size
                if size != info.file_bytes:
                    raise ValueError(f"data source {self.directory}: shard {path} has {size} bytes, the manifest lists "
                                     f"{info.file_bytes} (truncated or replaced since it was written)")
                # With the algorithm the manifest names (Manifest.load refused unknown ones).
                if self.verify and (digest := file_checksum(path, split_checksum(info.checksum, path)[0])) != info.checksum:
                    raise ValueError(f"data source {self.directory}: shard {path} has checksum {digest}, the manifest lists "
                                     f"{info.checksum} (damaged since it was written; data.verify_shards)")
                reader = open_shard(path)
            except (OSError, pa.ArrowInvalid) as e:
                raise ValueError(f"data source {self.directory}: shard {path} is unreadable: {e}") from e
            meta = reader.schema.metadata or {}
            try:
                theirs = json.loads(meta.get(META_STRATEGY, b"null"))
                same = theirs is not None and same_strategy(theirs, self.strategy)
            except (ValueError, TypeError):
                theirs, same = None, False
            if not same:
                # Stage order matters (strategy i defines stage i+1): compared as ordered lists.
                found = describe_strategy(theirs) if theirs is not None else "none"
                raise ValueError(f"data source {self.directory}: shard {path} has a different strategy ({found}) "
                                 f"from the manifest ({describe_strategy(self.strategy)})")
            self._readers[shard] = reader
        return self._readers[shard]

    def _batches_from_file(self, shard: int) -> list[list[int]]:
        """The batch plan of a shard whose manifest predates `ShardInfo.batches` (reads it)."""
        reader = self._reader(shard)
        plan = []
        for b in range(reader.num_record_batches):
            text = reader.get_batch(b).column("text")
            offsets = _buffers(text)[0]
            plan.append([len(text), int(offsets[-1] - offsets[0])])
        return plan

    def _unit(self, unit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(text offsets, text bytes, mask offsets, mask bytes) of a unit, as numpy views of the
        mapped file, so a document lookup is two slices and no Arrow call."""
        if unit not in self._units:
            shard, b = self._plan[unit]
            batch = self._reader(shard).get_batch(b)
            buffers = (*_buffers(batch.column("text")), *_buffers(batch.column("level_mask")))
            self._check_unit(unit, batch.num_rows, *buffers)
            self._units[unit] = buffers
        return self._units[unit]

    def _check_unit(self, unit: int, rows: int, t_off, t_data, m_off, m_data) -> None:
        shard, b = self._plan[unit]
        where = f"data source {self.directory}: shard {self.directory / self.manifest.shards[shard].path}, record batch {b}"
        text_bytes = int(t_off[-1] - t_off[0]) if rows else 0
        if (rows, text_bytes) != (self.unit_rows[unit], self._unit_bytes[unit]):
            raise ValueError(f"{where}: {rows} rows of {text_bytes} text bytes, the manifest lists "
                             f"{self.unit_rows[unit]} of {self._unit_bytes[unit]}")
        lengths = np.diff(t_off) != np.diff(m_off)
        if lengths.any():
            row = int(np.argmax(lengths))
            raise ValueError(f"{where}, row {row}: the level mask has {int(m_off[row + 1] - m_off[row])} bytes for "
                             f"{int(t_off[row + 1] - t_off[row])} bytes of text")
        mask = m_data[m_off[0]:m_off[-1]] if rows else m_data[:0]
        if mask.size and int(mask.max()) > self.depth:
            first = int(np.argmax(mask > self.depth))
            row = int(np.searchsorted(m_off, m_off[0] + first, side="right")) - 1
            raise ValueError(f"{where}, row {row}: level {int(mask[first])} at byte {int(m_off[0] + first - m_off[row])}, "
                             f"above the strategy's depth {self.depth} ({describe_strategy(self.strategy)})")

    @property
    def units(self) -> int:
        return len(self._plan)

    @property
    def documents(self) -> int:
        return int(self.first_doc[-1])

    @property
    def total_tokens(self) -> int:
        return sum(s.text_bytes for s in self.manifest.shards)

    def document(self, unit: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The document's bytes and levels as uint8 views into the mapped shard."""
        t_off, t_data, m_off, m_data = self._unit(unit)
        return t_data[t_off[row] : t_off[row + 1]], m_data[m_off[row] : m_off[row + 1]]

    def length(self, unit: int, row: int) -> int:
        t_off = self._unit(unit)[0]
        return int(t_off[row + 1] - t_off[row])

    def unit_text_bytes(self, unit: int) -> int:
        """Text bytes of a unit, from the manifest (the rank split opens no shard for it)."""
        return self._unit_bytes[unit]

    def doc_lengths(self, unit: int) -> np.ndarray:
        return np.diff(self._unit(unit)[0])


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (one per row, plus one) and data of a large_binary array, as numpy views."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return offsets, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))

