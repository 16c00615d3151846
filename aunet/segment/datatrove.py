"""AU-Net preprocessing as datatrove pipeline steps (the `aunet[datatrove]` extra).

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from aunet.segment.datatrove import AUNetSegment, AUNetShardWriter

    LocalPipelineExecutor(pipeline=[
        JsonlReader("corpus/", glob_pattern="*.jsonl.zst"),
        AUNetSegment({"word1": "1@1", "word2": "2@1"}),
        AUNetShardWriter("shards/"),
    ], tasks=64, workers=8, logging_dir="logs/segment").run()

`AUNetSegment` computes each Document's level mask with the Rust segmenter, in batches (the
GIL is released while it runs), and keeps it in the document's metadata, together with the
strategy list. `AUNetShardWriter` writes those documents in our shard format (SPEC section 3):
task r writes `part-{r:06d}-{k:04d}.arrow` shards, its rejects and `manifest.rank{r}-of{W}.json`;
the task that finds every rank manifest present writes the merged `manifest.json` (and
`aunet-segment merge DIR` does the same by hand). Output goes through datatrove's fsspec
layer, so `s3://bucket/shards` works as it does for datatrove's own writers; `verify`, the
trainer and `aunet eval` read local directories.

Reruns follow datatrove: a completed task is skipped by its completion marker, and a task
that was killed is run again from the start; its shards are rewritten under the same names,
with the same bytes, so nothing is written twice.
"""

from __future__ import annotations

import json

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from aunet.segment.corpus import SHARD_COLUMNS, parse_size
from aunet.segment.datatrove_metadata import MASK_KEY, REJECT_KEY, STRATEGY_KEY, document_source
from aunet.segment.errors import BadDocument, InvalidRequest
from aunet.segment.readers import DEFAULT_MAX_DOCUMENT_BYTES
from aunet.segment.segmenter import Segmenter
from aunet.segment.task_shards import TaskShards

class AUNetSegment(PipelineStep):
    """Level masks for every Document (SPEC section 2).

    `strategy` is what `Segmenter` takes (`{"word1": "1@1"}` or a list of pairs). Documents
    are segmented `batch_size` at a time with `threads` threads (default: the CPUs this task
    may use). A document whose text exceeds `max_document_bytes` is bad input: with
    `on_error="fail"` the task raises `BadDocument` naming it, with ``"skip"`` it is passed on
    marked as rejected, and the writer counts it with its source and reason."""

    name = "AU-Net segment"
    type = "🔡 - SEGMENT"

    def __init__(self, strategy, batch_size: int = 1024, threads: int | None = None,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, on_error: str = "fail"):
        super().__init__()
        if on_error not in ("fail", "skip"):
            raise InvalidRequest(f"on_error must be 'fail' or 'skip', got {on_error!r}")
        if batch_size < 1 or max_document_bytes < 1:
            raise InvalidRequest("batch_size and max_document_bytes must be >= 1")
        try:
            self.segmenter = Segmenter(strategy)
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"strategy: {e}") from None
        self.strategy = strategy
        self.strategy_json = json.dumps(strategy)
        self.batch_size, self.threads = batch_size, threads
        self.max_document_bytes, self.on_error = max_document_bytes, on_error

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data is None:
            return
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield from self._segment(batch)
                batch = []
        if batch:
            yield from self._segment(batch)

    def _without_unmatchable(self, docs: list, texts: list[bytes]) -> tuple[list, list[bytes]]:
        kept_docs, kept_texts = [], []
        for doc, data in zip(docs, texts):
            try:
                self.segmenter.levels(data)
            except RuntimeError as e:
                reason = f"segmentation failed: {e}"
                if self.on_error == "fail":
                    raise BadDocument(document_source(doc), "document", reason) from None
                doc.metadata[REJECT_KEY] = reason
                self.stat_update("rejected")
                continue
            kept_docs.append(doc)
            kept_texts.append(data)
        return kept_docs, kept_texts

    def _segment(self, docs: list):
        texts, keep = [], []
        for doc in docs:
            reason = None
            if not isinstance(doc.text, str):
                reason = f"text is {type(doc.text).__name__}, not a string"
            else:
                # surrogatepass: lone surrogates (from JSON escapes) stay bytes, as aunet-segment keeps them.
                data = doc.text.encode("utf-8", "surrogatepass")
                if len(data) > self.max_document_bytes:
                    reason = f"document of {len(data)} bytes exceeds max_document_bytes {self.max_document_bytes}"
            if reason is not None:
                if self.on_error == "fail":
                    raise BadDocument(document_source(doc), "document", reason)
                doc.metadata[REJECT_KEY] = reason
                self.stat_update("rejected")
                continue
            texts.append(data)
            keep.append(doc)
        with self.track_time(unit="batch"):
            try:
                masks = self.segmenter.levels_batch(texts, threads=self.threads) if texts else []
            except RuntimeError:
                # A custom pattern failed on some document (its work bound): those documents
                # are rejected one by one, the others segmented as usual.
                keep, texts = self._without_unmatchable(keep, texts)
                masks = self.segmenter.levels_batch(texts, threads=self.threads) if texts else []
        for doc, mask in zip(keep, masks):
            doc.metadata[MASK_KEY] = mask.tobytes()  # bytes, so that any later step can still serialise the metadata
            doc.metadata[STRATEGY_KEY] = self.strategy_json  # one shared string: the writer's schema
            self.stat_update("segmented")
            self.stat_update("text_bytes", value=len(doc.metadata[MASK_KEY]), unit="doc")
        yield from docs


class AUNetShardWriter(PipelineStep):
    """Writes the documents `AUNetSegment` gave masks to as shards (SPEC section 3), per task.

    `output_folder` is anything datatrove's `get_datafolder` takes (a path, `s3://...`, a
    `(path, filesystem)` pair, a `DataFolder`). Task r of W writes `part-{r:06d}-{j:04d}.arrow`
    shards of about `shard_size` text bytes, `rejects/part-{r:06d}.jsonl` (documents
    `AUNetSegment` rejected, with their source and reason) and, last, its rank manifest
    `manifest.rank{r}-of{W}.json`; when every rank manifest is there, `manifest.json` is
    written (by whichever task finds them all; `aunet-segment merge DIR` does the same). The
    `row` column holds the document's index in the task's stream; `keep_fields` are carried as
    string columns (`id` is the Document id, other names come from its metadata). `strategy`
    (optional, what `AUNetSegment` was given) names the strategy list for tasks that receive no
    document: with it, a run whose every task is empty still writes a manifest (of no shards);
    documents segmented with another list are refused."""

    name = "AU-Net shards"
    type = "💽 - WRITER"

    def __init__(self, output_folder, shard_size: str | int = "256MB", compression: str = "none",
                 keep_fields: tuple[str, ...] | list[str] = ("id",), strategy=None):
        super().__init__()
        if compression not in ("none", "zstd"):
            raise InvalidRequest(f"compression must be 'none' or 'zstd', got {compression!r}")
        reserved = set(SHARD_COLUMNS)
        if reserved & set(keep_fields) or len(set(keep_fields)) != len(keep_fields):
            raise InvalidRequest(f"keep_fields {list(keep_fields)}: names must be distinct and not {sorted(reserved)}")
        self.output_folder = get_datafolder(output_folder)
        self.shard_bytes = parse_size(shard_size)
        self.compression = compression
        self.keep_fields = tuple(keep_fields)
        if strategy is not None:
            try:
                Segmenter(strategy)
            except (TypeError, ValueError) as e:
                raise InvalidRequest(f"strategy: {e}") from None
        self.strategy_json = json.dumps(strategy) if strategy is not None else None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        task = TaskShards(self.output_folder, rank, world_size, self.shard_bytes, self.compression, self.keep_fields)
        task.strategy_json = self.strategy_json
        for doc in data or ():
            with self.track_time():
                task.add(doc)
            self.stat_update("rejected" if REJECT_KEY in doc.metadata else "written")
            yield doc  # as datatrove's writers do, so that later steps still see the documents
        task.finish()
        if task.merged is not None:
            self.stat_update("merged_manifest")
