"""One input file -> its shards, resumably: the unit of work of `aunet-segment`.

Input file k (its index in the sorted list of all inputs, shared by every rank) becomes
`part-{k:06d}-{j:04d}.arrow` for j = 0, 1, ..., a pure function of the file's contents and
the options (a rerun that redoes an input still listed by a manifest writes another generation
of names, `layout.shard_name`, and the caller removes the old ones after its manifest). Shards are written under a `.tmp` name and renamed when complete; when all of a
file's shards are complete, a marker `.progress/{k:06d}.json` (written atomically) records
them with their checksums. A rerun skips files whose marker matches the current options and
input, and redoes any other file from scratch, so a run killed at any point and rerun ends
with the same bytes as an uninterrupted one. The names are `aunet.segment.layout`'s.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from aunet.io import write_atomic
from aunet.segment.errors import BadDocument
from aunet.segment.readers import DEFAULT_MAX_DOCUMENT_BYTES, Reject, ahead, detect_format, int64_array, read_batches
from aunet.segment.readers.batch import Batch
from aunet.segment.segmenter import Segmenter
from aunet.segment.layout import PROGRESS_DIR, REJECTS_DIR, input_glob, marker_name, rejects_name, shard_generation
from aunet.segment.shard_writer import LocalFiles, ShardWriter
from aunet.segment.shards import ShardInfo, checksum_matches, confined, shard_schema, split_checksum
from aunet.segment.strategy_order import ordered_strategy
from aunet.version import __version__

# Text bytes per batch (a record batch of the shards; a function of the input alone), and the
# batches each pipeline stage may run ahead of the next.
BATCH_BYTES = 8 << 20
PIPELINE_DEPTH = 2


class Cancelled(Exception):
    """A file left unfinished because the run is being stopped."""


@dataclass(frozen=True)
class JobOptions:
    strategy: object  # the mapping or list given to Segmenter, stored as-is in the metadata
    text_field: str | None
    extra_fields: tuple[str, ...]
    compression: str  # "none" | "zstd"
    shard_bytes: int
    threads: int
    on_error: str  # "fail" | "skip"
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES  # longer documents are rejected, not written

    def fingerprint(self) -> str:
        """Everything that changes the bytes of the output (threads do not)."""
        keys = {k: v for k, v in asdict(self).items() if k not in ("threads", "on_error")}
        # sort_keys would reorder a strategy mapping, yet stage order changes every mask: the
        # stages go in as an ordered list, and the spelling as given (written verbatim into
        # the schema metadata) as a string, which sort_keys leaves alone.
        keys["strategy"] = [ordered_strategy(self.strategy), json.dumps(self.strategy)]
        return hashlib.sha256(json.dumps([keys, __version__], sort_keys=True).encode()).hexdigest()


@dataclass
class FileResult:
    index: int
    source: str
    input_size: int
    input_mtime_ns: int
    fingerprint: str
    shards: list[ShardInfo] = field(default_factory=list)
    read: int = 0
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    text_bytes: int = 0
    resolved: str = ""  # the input's resolved path
    sample: str = ""  # `content_sample` of the input when it was read
    complete: bool = True  # False: part of the file could not be read (an I/O error), so it is not done

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def marker_path(out: Path, index: int) -> Path:
    return out / marker_name(index)


def content_sample(path: Path, size: int) -> str:
    """A cheap fingerprint of a file's bytes: its size, its first and last 64 KiB and 16 blocks
    of 4 KiB spread evenly between (at most about 200 KiB read, whatever the size). Together
    with the size and mtime, it tells a replaced file from the one a marker describes."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        if size <= 256 << 10:
            h.update(f.read())
        else:
            for offset in [0, *(size * i // 17 for i in range(1, 17)), size - (64 << 10)]:
                f.seek(offset)
                h.update(f.read(64 << 10 if offset in (0, size - (64 << 10)) else 4 << 10))
    return h.hexdigest()


def load_done(out: Path, index: int, source: Path, opts: JobOptions, repair: bool = False) -> FileResult | None:
    """The finished result of file `index`, if its marker matches this input and these options:
    the same file (name, resolved path, size, mtime and `content_sample`), every shard present
    with its recorded size (with `repair`, its recorded checksum too: XXH3-128, or SHA-256 in
    markers written before), and, under on_error="fail", no rejected document (those were
    accepted by an earlier "skip" run)."""
    path = marker_path(out, index)
    try:
        raw = json.loads(path.read_text())
        raw["shards"] = [ShardInfo.from_dict(s) for s in raw["shards"]]  # old markers: "sha256"
        done = FileResult(**raw)
        for s in done.shards:
            split_checksum(s.checksum, path)  # a checksum this version cannot check: redo the file
    except (OSError, ValueError, TypeError):  # ManifestError is a ValueError
        return None
    try:
        st = source.stat()
        # The source name too: with another input list, index k may name another file.
        if (done.fingerprint, done.source, done.resolved, done.input_size, done.input_mtime_ns) != (
                opts.fingerprint(), str(source), str(source.resolve()), st.st_size, st.st_mtime_ns):
            return None
        if not done.complete or done.sample != content_sample(source, st.st_size):
            return None
    except OSError:
        return None  # unreadable now: process_file records why
    if opts.on_error == "fail" and done.rejected_total:
        return None
    # A marker's paths go into the manifest: one pointing outside `out` means the file is redone.
    if not all(confined(out, s.path) and (out / s.path).is_file() and (out / s.path).stat().st_size == s.file_bytes for s in done.shards):
        return None
    if repair and not all(checksum_matches(out / s.path, s.checksum) for s in done.shards):
        return None
    return done


def _prepare_redo(out: Path, index: int, listed: frozenset[str]) -> int:
    """Before input `index` is redone: remove what no manifest lists (unfinished `.tmp` files,
    shards of a run that was killed or failed before its manifest) and the marker, and return
    the generation its new shards are written under: one that no listed shard of the input has,
    so the shards a manifest lists stay whole until a new manifest replaces it."""
    kept = set()
    for path in out.glob(input_glob(index)):
        if path.name in listed:
            kept.add(shard_generation(path.name))
        else:
            path.unlink()
    marker = marker_path(out, index)
    marker.unlink(missing_ok=True)
    marker.with_name(marker.name + ".tmp").unlink(missing_ok=True)
    return min(set(range(len(kept) + 1)) - kept)


def process_file(
    out: Path,
    index: int,
    source: Path,
    name: str,
    opts: JobOptions,
    progress: Callable[[int, int, int], None] = lambda docs, text_bytes, input_bytes: None,
    cancel: threading.Event | None = None,
    listed: frozenset[str] = frozenset(),
) -> FileResult:
    """Segment one input file into its shards; returns what was read, written and rejected.
    When `cancel` is set, the file is left unfinished at the next batch (`Cancelled`): no
    marker, so a rerun redoes it. `listed`: the shard names that the directory's manifests list
    now, which stay until the caller has published a manifest that no longer does."""
    generation = _prepare_redo(out, index, listed)
    st = source.stat()
    result = FileResult(index, name, st.st_size, st.st_mtime_ns, opts.fingerprint(), resolved=str(source.resolve()))
    try:
        result.sample = content_sample(source, st.st_size)
    except OSError:
        result.complete = False  # read_batches below rejects the file, naming the error
    segmenter = Segmenter(opts.strategy)
    schema = shard_schema(opts.strategy, name, list(opts.extra_fields))
    writer = ShardWriter(LocalFiles(out), index, schema, opts.shard_bytes, opts.compression, generation)
    rejects: list[Reject] = []
    reported = 0

    unit = "line" if (detect_format(source) or "").startswith("jsonl") else "row"

    def segmented(batches):
        for batch in batches:
            if not batch.documents:
                yield batch, None
                continue
            try:
                masks = segmenter.levels_batch(batch.texts, threads=opts.threads)
            except RuntimeError:
                # A custom pattern failed on some document (its work bound): those documents
                # become rejects of their own, the others are segmented as usual.
                batch = without_unmatchable(batch, segmenter, name, unit)
                masks = segmenter.levels_batch(batch.texts, threads=opts.threads)
            yield batch, masks

    # A pipeline of threads, each stage a few batches ahead of the next: decompressing and cutting
    # lines, parsing (or decoding Parquet), segmenting, and writing here. Every stage keeps the
    # order, so the shards are those of a serial run.
    batches = read_batches(source, name, opts.text_field, list(opts.extra_fields), BATCH_BYTES, opts.max_document_bytes, ahead=PIPELINE_DEPTH)
    stream = ahead(segmented(batches), PIPELINE_DEPTH, "aunet-segment") if PIPELINE_DEPTH else segmented(batches)
    try:
        for batch, masks in stream:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{name}: stopped before its end (another worker was interrupted)")
            if batch.rejects and opts.on_error == "fail":
                first = batch.rejects[0]
                raise BadDocument(first.file, first.location, first.reason)
            rejects.extend(batch.rejects)
            result.read += batch.documents + sum(r.count for r in batch.rejects)
            if batch.documents:
                lengths = np.diff(np.frombuffer(batch.texts.buffers()[1], np.int64)[batch.texts.offset : batch.texts.offset + batch.documents + 1])
                text_bytes = int(lengths.sum())
                columns = [batch.texts, masks, int64_array(batch.rows), *(batch.extra[f] for f in opts.extra_fields)]
                writer.write(pa.RecordBatch.from_arrays(columns, schema=schema), lengths)
                result.written += batch.documents
                result.text_bytes += text_bytes
                progress(batch.documents, text_bytes, batch.input_bytes)
            reported += batch.input_bytes
    except BaseException as e:
        if cancel is not None and not isinstance(e, Exception):
            # An interrupt: the other workers stop at their next batch from now, not once this
            # file's pipeline has shut down (long enough, under load, for another file to end).
            cancel.set()
        raise
    finally:
        stream.close()  # stops the threads (the segmenting one reads `batches`) before the file closes
        batches.close()
    writer.close_shard()
    progress(0, 0, max(0, st.st_size - reported))
    result.shards = writer.shards
    by_reason: Counter[str] = Counter()
    for r in rejects:
        by_reason[_reason_key(r)] += r.count
    result.rejected = dict(by_reason)
    if rejects:
        lines = "".join(json.dumps({"file": r.file, "location": r.location, "reason": r.reason, "count": r.count}) + "\n" for r in rejects)
        (out / REJECTS_DIR).mkdir(exist_ok=True)
        write_atomic(out / rejects_name(index), lines.encode())
    else:
        (out / rejects_name(index)).unlink(missing_ok=True)
    if any(r.retry for r in rejects):
        result.complete = False
    if result.complete:
        (out / PROGRESS_DIR).mkdir(exist_ok=True)
        write_atomic(marker_path(out, index), json.dumps(asdict(result)).encode())
    # else no marker: the documents are counted as rejected in this run's manifest, and the next
    # run reads the file again (an I/O error may be gone by then: permissions, a mount).
    return result


def without_unmatchable(batch: Batch, segmenter: Segmenter, name: str, unit: str) -> Batch:
    """`batch` less the documents whose segmentation fails (a custom regex past its bound),
    each of them a reject naming its line or row and the pattern."""
    keep = np.ones(batch.documents, dtype=bool)
    rejects = list(batch.rejects)
    for i, text in enumerate(batch.texts.to_pylist()):
        try:
            segmenter.levels(text)
        except RuntimeError as e:
            keep[i] = False
            rejects.append(Reject(name, f"{unit} {int(batch.rows[i])}", f"segmentation failed: {e}"))
    mask = pa.array(keep)
    return Batch(batch.rows[keep], batch.texts.filter(mask), {f: c.filter(mask) for f, c in batch.extra.items()},
                 rejects, batch.input_bytes)


def _reason_key(r: Reject) -> str:
    """The reason without per-document details (for the summary's counts by reason)."""
    return r.reason.split(":")[0]
