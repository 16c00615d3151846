"""The shards of one datatrove task, in a datatrove `DataFolder` (any fsspec filesystem).

Kept apart from the pipeline steps in `aunet.segment.datatrove` so that the step classes stay
thin: this is where documents become record batches, rejects and manifests. A task always
starts by removing what an earlier, interrupted run of the same task left, and names its
files by its rank alone, so a rerun writes exactly the files an uninterrupted run writes.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from aunet.segment.datatrove_metadata import MASK_KEY, REJECT_KEY, STRATEGY_KEY, document_source
from aunet.segment.errors import InvalidRequest, ManifestError
from aunet.segment.layout import MANIFEST, input_glob, rank_manifest_name, rejects_name
from aunet.segment.readers.batch import string_array
from aunet.segment.shard_writer import FolderFiles, ShardWriter
from aunet.segment.shards import Manifest, shard_schema
from aunet.segment.strategy_order import same_strategy
from aunet.segment.tools import combine

#: A record batch is written once this many documents, or this many text bytes (or a shard's
#: worth, if less), are gathered.
BATCH_DOCUMENTS = 1024
BATCH_BYTES = 8 << 20


class TaskShards:
    def __init__(self, folder, rank: int, world_size: int, shard_bytes: int, compression: str, keep_fields: tuple[str, ...]):
        self.keys = (MASK_KEY, STRATEGY_KEY, REJECT_KEY)
        self.folder, self.rank, self.world_size = folder, rank, world_size
        self.shard_bytes, self.compression, self.keep_fields = shard_bytes, compression, keep_fields
        self.strategy_json: str | None = None
        self.writer: ShardWriter | None = None
        self.pending: list = []
        self.pending_bytes = 0
        self.rows = 0  # documents seen by this task, written or rejected: the `row` of the next one
        self.written = 0
        self.rejects: list[dict] = []
        self.merged: Manifest | None = None
        self._clear_earlier_run()

    def _clear_earlier_run(self) -> None:
        for name in self.folder.list_files(glob_pattern=input_glob(self.rank)):
            self.folder.rm(name)
        for name in (rejects_name(self.rank), rank_manifest_name(self.rank, self.world_size), MANIFEST):
            if self.folder.isfile(name):
                self.folder.rm(name)

    def add(self, doc) -> None:
        mask_key, strategy_key, reject_key = self.keys
        meta = doc.metadata
        row = self.rows
        self.rows += 1
        if reject_key in meta:
            self.rejects.append({"file": document_source(doc), "location": f"document {row} of task {self.rank}",
                                 "reason": meta.pop(reject_key), "count": 1})
            return
        if mask_key not in meta or strategy_key not in meta:
            raise InvalidRequest(f"AUNetShardWriter: document {doc.id!r} has no level mask: put AUNetSegment before the writer")
        strategy = meta.pop(strategy_key)
        if self.strategy_json is None:
            self.strategy_json = strategy
        elif strategy != self.strategy_json and not same_strategy(json.loads(strategy), json.loads(self.strategy_json)):
            raise InvalidRequest(f"AUNetShardWriter: document {doc.id!r} was segmented with strategy {strategy}, "
                                 f"the documents before it with {self.strategy_json}: one writer, one strategy list")
        text = doc.text.encode("utf-8", "surrogatepass")
        mask = meta.pop(mask_key)
        if len(mask) != len(text):
            raise InvalidRequest(f"AUNetShardWriter: document {doc.id!r} has {len(text)} bytes but a mask of {len(mask)}: "
                                 "a step between AUNetSegment and the writer changed its text")
        extra = []
        for f in self.keep_fields:
            value, problem = kept_text(doc.id if f == "id" else meta.get(f), f)
            if problem:
                self.rejects.append({"file": document_source(doc), "location": f"document {row} of task {self.rank}",
                                     "reason": problem, "count": 1})
                return
            extra.append(value)
        self.pending.append((text, mask, row, extra))
        self.pending_bytes += len(text)
        if len(self.pending) == BATCH_DOCUMENTS or self.pending_bytes >= min(BATCH_BYTES, self.shard_bytes):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            strategy = json.loads(self.strategy_json)
            schema = shard_schema(strategy, f"datatrove task {self.rank} of {self.world_size}", list(self.keep_fields))
            self.writer = ShardWriter(FolderFiles(self.folder), self.rank, schema, self.shard_bytes, self.compression)
        texts, masks, rows, extras = zip(*self.pending)
        columns = [pa.array(texts, pa.large_binary()), pa.array(masks, pa.large_binary()), pa.array(rows, pa.int64())]
        columns += [string_array([e[i] for e in extras]) for i in range(len(self.keep_fields))]
        lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
        self.writer.write(pa.RecordBatch.from_arrays(columns, schema=self.writer.schema), lengths)
        self.written += len(self.pending)
        self.pending, self.pending_bytes = [], 0

    def finish(self) -> None:
        """Close the last shard, write the rejects and the rank manifest, then merge if every
        rank is done."""
        self._flush()
        shards = []
        if self.writer is not None:
            self.writer.close_shard()
            shards = self.writer.shards
        by_reason = Counter(r["reason"].split(":")[0] for r in self.rejects)
        if self.rejects:
            with self.folder.open(rejects_name(self.rank), "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in self.rejects))
        manifest = Manifest.build(
            strategy=json.loads(self.strategy_json) if self.strategy_json is not None else None,
            compression=self.compression, text_field=None, extra_fields=list(self.keep_fields),
            world_size=self.world_size, ranks=[self.rank],
            inputs=[{"index": self.rank, "path": f"datatrove task {self.rank}", "size": 0, "read": self.rows,
                     "written": self.written, "rejected": len(self.rejects)}],
            shards=shards, rejected_by_reason=[by_reason],
        )
        _write(self.folder, rank_manifest_name(self.rank, self.world_size), manifest.to_json(), self.rank)
        self.merged = merge_folder(self.folder, self.world_size, self.rank)


def kept_text(value, field: str) -> tuple[str | None, str | None]:
    """A kept metadata value as the shard's string column holds it, or why it cannot be one:
    strings as they are, bytes as UTF-8 text (bytes that are not UTF-8 reject the document,
    naming the field, as from Parquet), anything else as JSON text (sets as sorted lists, other
    objects JSON cannot write as their `str`), as from JSONL."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError as e:
            return None, f"kept field {field!r} is not valid UTF-8 ({e.reason} at byte {e.start})"
    return json.dumps(value, ensure_ascii=False, default=_json_default), None


def _json_default(value):
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:  # mixed types: in the order the set gives
            return list(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _write(folder, name: str, data: bytes, rank: int) -> None:
    """Write under a name of this task's own, then move into place: a reader never sees half a
    manifest, and two tasks merging at once do not write into one temporary file."""
    tmp = f"{name}.tmp{rank}"
    with folder.open(tmp, "wb") as f:
        f.write(data)
    folder.mv(tmp, name)


def merge_folder(folder, world_size: int, rank: int = 0) -> Manifest | None:
    """Write `manifest.json` once all `world_size` rank manifests are in `folder`, and return
    it; None while some task is still running."""
    names = [rank_manifest_name(r, world_size) for r in range(world_size)]
    if not all(folder.isfile(n) for n in names):
        return None
    manifests = []
    for n in names:
        with folder.open(n, "rb") as f:
            try:
                manifests.append(Manifest.from_json(f.read()))
            except (ValueError, TypeError, KeyError) as e:
                raise ManifestError(f"{n}: not a valid manifest: {e}", file=n) from e
    merged = combine(names, manifests, folder.path)
    _write(folder, MANIFEST, merged.to_json(), rank)
    return merged
