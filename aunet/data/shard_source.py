"""One shard directory, memory-mapped: documents by reference, without copies.

A *unit* is one record batch of one shard. Documents are referred to as (unit, row) pairs,
which is what the loader's state stores, so that a resumed run re-reads exactly the same
bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from aunet.config.model import BOS_ID, EOS_ID
from aunet.segment.shards import META_STRATEGY, Manifest, open_shard
from aunet.segment.strategy_order import describe_strategy, same_strategy


#: Bytes of text each id stands for: 1 per byte, 0 for BOS and EOS.
BYTE_TOKEN_BYTES = np.array([1] * 256 + [0, 0], dtype=np.int32)


class ShardSource:
    bos_id, eos_id, token_bytes = BOS_ID, EOS_ID, BYTE_TOKEN_BYTES

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
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
            path = self.directory / self.manifest.shards[shard].path
            try:
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
            self._units[unit] = (*_buffers(batch.column("text")), *_buffers(batch.column("level_mask")))
        return self._units[unit]

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


def open_sources(paths, tokenizer: str | None = None) -> list:
    """ShardSources for `paths` (shard directories); with a BPE `tokenizer` file, read through
    it as token ids (`aunet.baselines.tokenized_source`, the BPE baseline)."""
    sources = [ShardSource(p) for p in paths]
    if tokenizer is None:
        return sources
    from aunet.baselines.bpe import load_bpe
    from aunet.baselines.tokenized_source import TokenizedSource

    bpe = load_bpe(tokenizer)
    return [TokenizedSource(s, bpe) for s in sources]
