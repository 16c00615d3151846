"""Input corpora for `aunet-segment`: JSONL (plain, .gz, .zst), Parquet and Arrow IPC.

Each reader yields `Batch`es of documents (text bytes and their line/row numbers) together with
the documents it had to reject, so that every document read is either written or counted with
its reason. Compressed JSONL is streamed and never fully decompressed in memory.

JSONL is read in blocks of whole lines (about `batch_bytes` each, cut by content only). The
text field (and kept fields whose values are strings or null) is taken out of each line by the
compiled scanner (`aunet._segmenter.jsonl_texts`, GIL released, no Python object per
document). A line it cannot decide exactly (invalid JSON, a text that is not a plain string, a
kept value of another type, NaN, lone surrogates...) goes through the standard `json` module,
so what is accepted, every rejection message and every kept value are exactly `json.loads`'s. With `ahead` > 0 the stages (decompressing and cutting lines; parsing) run in
threads of their own, a few blocks ahead of the consumer; the batches are the same either way.
"""

from __future__ import annotations

import gzip
import json
import queue
import sys
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from aunet._segmenter import jsonl_texts

T = TypeVar("T")

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow")
TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())

# The longest document (a JSONL line's raw bytes, a Parquet/Arrow text value) that is segmented.
# Segmenting holds several copies of a document at once (its bytes, its decoded code points at
# 4 bytes each, its mask), so one multi-gigabyte "line" (a file without newlines, a dumped
# blob) would need many gigabytes per worker; 64 MiB is still hundreds of times longer than a
# long book, so real documents pass and the model's windows (8 KiB) never notice the cap.
DEFAULT_MAX_DOCUMENT_BYTES = 64 << 20


# Arrays are built from buffers: `pa.array` on a Python list or a numpy array imports pandas
# (a quarter of a second per worker process) when it is installed.


def int64_array(values: np.ndarray) -> pa.Array:
    """An Arrow int64 array viewing a numpy int64 array."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def binary_array(values: list[bytes], type: pa.DataType = pa.large_binary()) -> pa.Array:
    """A large_binary (or large_string) array of `values`: one join and one cumulative sum."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    return pa.Array.from_buffers(type, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def string_array(values: list[str | None]) -> pa.Array:
    """A large_string array of `values` (None is null). A lone surrogate (only a JSON escape
    gives one) has no UTF-8 form: it is kept as the text of its escape, backslash included."""
    builder = pa.lib.StringBuilder()
    try:
        builder.append_values(values)
    except UnicodeEncodeError:
        builder = pa.lib.StringBuilder()
        builder.append_values([v if v is None else v.encode("utf-8", "backslashreplace").decode() for v in values])
    return builder.finish().cast(pa.large_string())


def _bool_array(values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])


@dataclass
class Reject:
    file: str
    location: str  # "line 12", "row 5", "rows 0-99", "after line 40"
    reason: str
    count: int = 1
    retry: bool = False  # an I/O error, not the contents: the file is read again by the next run


@dataclass
class Batch:
    rows: np.ndarray  # int64: JSONL line (1-based) or Parquet/Arrow row (0-based)
    texts: pa.Array  # large_binary
    extra: dict[str, pa.Array] = field(default_factory=dict)  # large_string columns
    rejects: list[Reject] = field(default_factory=list)
    input_bytes: int = 0  # source bytes consumed since the previous batch (for progress)

    @property
    def documents(self) -> int:
        return len(self.rows)

    @classmethod
    def rejected(cls, reject: Reject, input_bytes: int = 0) -> "Batch":
        """A batch holding no document, only a rejection (a file or part that is unreadable)."""
        return cls(np.zeros(0, np.int64), binary_array([]), rejects=[reject], input_bytes=input_bytes)


def detect_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    last = suffixes[-1] if suffixes else ""
    before = suffixes[-2] if len(suffixes) == 2 else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last == ".gz" and before in JSONL_SUFFIXES:
        return "jsonl.gz"
    if last in (".zst", ".zstd") and before in JSONL_SUFFIXES:
        return "jsonl.zst"
    if last in (".parquet", ".pq"):
        return "parquet"
    if last in (".arrow", ".feather", ".ipc"):
        return "arrow"
    return None


def ahead(items: Iterable[T], depth: int = 2, name: str = "aunet-ahead") -> Iterator[T]:
    """`items`, produced in a thread of their own at most `depth` items ahead of the consumer,
    in order; an exception in the producer is raised here, after the items before it. Closing
    this generator (or leaving it early) stops the producer and waits for it, so whatever the
    producer reads from is free again when this returns."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)  # unblock a producer waiting for room
            except queue.Empty:
                pass
        thread.join()


def read_batches(path: Path, name: str, text_field: str | None, extra_fields: list[str], batch_bytes: int = 8 << 20,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, ahead: int = 0) -> Iterator[Batch]:
    """Documents of `path` in batches of about `batch_bytes` (a function of the file's contents
    only); one longer than `max_document_bytes` is rejected (see `DEFAULT_MAX_DOCUMENT_BYTES`).
    With `ahead` > 0, reading runs in background threads up to `ahead` batches ahead."""
    fmt = detect_format(path)
    try:
        if fmt in ("jsonl", "jsonl.gz", "jsonl.zst"):
            yield from _jsonl(path, name, fmt, text_field, extra_fields, batch_bytes, max_document_bytes, ahead)
        elif fmt == "parquet":
            yield from _parquet(path, name, text_field, extra_fields, max_document_bytes, batch_bytes, ahead)
        elif fmt == "arrow":
            yield from _arrow(path, name, text_field, extra_fields, max_document_bytes, batch_bytes, ahead)
        else:
            raise ValueError(f"{name}: unsupported input format (expected one of {', '.join(FORMATS)})")
    except OSError as e:
        yield Batch.rejected(Reject(name, "file", f"unreadable: {e.strerror or e}", retry=True))


# ---------------------------------------------------------------- JSONL


ZSTD_READ_SIZE = 1 << 18
ZSTD_WRITE_SIZE = 4 << 20


def _zstd_chunks(raw) -> Iterator[bytes]:
    """Decompressed chunks of every zstd frame in `raw`; a truncated last frame raises, and so
    does a corrupt one, but only after everything that decodes before the damage: one read of
    compressed input decodes to megabytes, all lost with the error, so on an error the frame is
    decoded again from its start in small steps (`_salvage`) up to the damaged block."""
    dctx = zstandard.ZstdDecompressor()
    # Small reads into a large output buffer: python-zstandard otherwise grows its output in
    # 128 KiB steps and joins them, which halved the decompression rate (about 400 against
    # 800 MB/s of text on the benchmark mix).
    new_obj = lambda: dctx.decompressobj(write_size=ZSTD_WRITE_SIZE)  # noqa: E731
    obj, fed = new_obj(), False
    frame_start, produced = raw.tell(), 0  # the current frame's offset in `raw`; its bytes yielded
    while chunk := raw.read(ZSTD_READ_SIZE):
        end = raw.tell()
        data = chunk
        while data:
            fed = True
            try:
                out = obj.decompress(data)
            except zstandard.ZstdError:
                yield from _salvage(raw, dctx, frame_start, produced)
                raise
            if out:
                produced += len(out)
                yield out
            if obj.eof:
                data, obj, fed = obj.unused_data, new_obj(), False
                frame_start, produced = end - len(data), 0
            else:
                data = b""
    if fed and not obj.eof:
        raise zstandard.ZstdError("truncated zstd frame")


def _salvage(raw, dctx, frame_start: int, produced: int, step: int = 4096) -> Iterator[bytes]:
    """The output of the frame at `frame_start` past its first `produced` bytes, up to the first
    byte of compressed input that fails: a first pass finds the last `step` of input that
    decodes cleanly, a second decodes up to there and feeds the failing step byte by byte (a
    block is emitted as soon as its last byte is in; fed with the damage in one call, it would
    be lost with the error). Costs two decodes of the frame, and only when it is damaged."""
    raw.seek(frame_start)
    obj, good = dctx.decompressobj(), 0
    while piece := raw.read(step):
        try:
            obj.decompress(piece)
        except zstandard.ZstdError:
            break
        good += len(piece)
    raw.seek(frame_start)
    obj, seen = dctx.decompressobj(), 0

    def past(out: bytes) -> bytes:
        nonlocal seen
        new = out[max(0, produced - seen):] if seen + len(out) > produced else b""
        seen += len(out)
        return new

    while good:
        piece = raw.read(min(good, 1 << 20))
        good -= len(piece)
        if out := past(obj.decompress(piece)):
            yield out
    for byte in raw.read(step):
        try:
            out = past(obj.decompress(bytes((byte,))))
        except zstandard.ZstdError:
            return
        if out:
            yield out


def _gzip_chunks(raw) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=raw) as g:
        while chunk := g.read(1 << 20):
            yield chunk


class LongLine:
    """A line longer than the cap, skipped: only its length is kept, not its bytes."""

    def __init__(self, size: int):
        self.size = size


def _lines(chunks: Iterator[bytes], max_bytes: int | None = None) -> Iterator[bytes | LongLine]:
    """The lines (without their newline) that `_line_blocks` cuts from a stream of chunks, one
    by one: the JSONL reader's line splitter, for callers and tests that want lines."""
    cap = max_bytes if max_bytes is not None else 1 << 62
    for block in _line_blocks(chunks, lambda: 0, cap, 1 << 62, "jsonl"):
        for piece in block.pieces:
            if isinstance(piece, LongLine):
                yield piece
                continue
            buf, start, end = piece
            while start < end:
                nl = buf.find(b"\n", start, end)
                stop = end if nl < 0 else nl
                yield buf[start:stop]
                start = stop + 1


def _pick_text(obj: dict, text_field: str | None) -> tuple[str | None, object]:
    if text_field is not None:
        return (text_field, obj[text_field]) if text_field in obj else (None, None)
    for key in ("text", "content"):
        if key in obj:
            return key, obj[key]
    return None, None


class _Problem:
    def __init__(self, reason: str):
        self.reason = reason


def _parse_line(line: bytes, text_field: str | None, wanted: str) -> tuple[dict | None, str | _Problem]:
    """(the JSON object, its text) or (None, why the line is rejected)."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        return None, _Problem(f"malformed JSON: {e}")
    except RecursionError:
        # `json` recurses per nesting level: a line of thousands of brackets is a bad document,
        # not a crash of the whole run.
        return None, _Problem(f"malformed JSON: nested more deeply than the json module allows ({sys.getrecursionlimit()} levels)")
    if not isinstance(obj, dict):
        return None, _Problem(f"not a JSON object but {type(obj).__name__}")
    key, value = _pick_text(obj, text_field)
    if key is None:
        return None, _Problem(f"missing text field ({wanted})")
    if not isinstance(value, str):
        return None, _Problem(f"text field {key!r} is {type(value).__name__}, not a string")
    return obj, value


def _extra_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _too_long(size: int, cap: int, what: str) -> str:
    return f"document too long: {what} of {size:,} bytes is over max_document_bytes ({cap:,})"


@dataclass
class _Block:
    """Whole lines of a JSONL stream, in order: `pieces` are (buffer, start, end) ranges of
    complete lines (the last line of a file may lack its newline) or `LongLine`s."""

    pieces: list
    input_pos: int  # source bytes read when the block was cut (for progress)
    error: str | None = None  # the stream broke after these lines


def _line_blocks(chunks: Iterator[bytes], tell, max_bytes: int, block_bytes: int, fmt: str) -> Iterator[_Block]:
    """The lines of a stream of chunks, in blocks of whole lines. A block ends with the line
    during which it reaches `block_bytes` bytes, so blocks (and the batches made of them) are
    a function of the contents alone, whatever the chunks. Lines are not copied, except one
    that spans chunks, joined once when it ends (linear time). A line longer than `max_bytes`
    (newline excluded) becomes a `LongLine`, and no more than `max_bytes` plus one chunk of it
    is ever held. A broken stream ends with a block that holds the complete lines before the
    damage and says why (`error`)."""
    pieces: list = []
    size = 0  # bytes in `pieces`, newlines included
    ready: list[_Block] = []
    tail: list = []  # the unfinished line
    held = 0  # bytes in `tail`
    skipped = -1  # bytes so far of an over-long unfinished line, or -1

    def hold(part) -> None:
        nonlocal tail, held, skipped
        if skipped >= 0:
            skipped += len(part)
            return
        tail.append(part)
        held += len(part)
        if held > max_bytes:
            tail, held, skipped = [], 0, held

    def finish_tail(with_newline: bool) -> None:
        nonlocal tail, held, skipped, size
        if skipped >= 0:
            pieces.append(LongLine(skipped))
        else:
            line = tail[0] if len(tail) == 1 and isinstance(tail[0], bytes) else b"".join(tail)
            pieces.append((line, 0, len(line)))
            size += len(line) + with_newline
        tail, held, skipped = [], 0, -1
        if size >= block_bytes:
            cut()

    def cut() -> None:
        nonlocal pieces, size
        ready.append(_Block(pieces, tell()))
        pieces, size = [], 0

    def add_run(buf: bytes, start: int, end: int) -> None:
        """Whole lines buf[start:end] (buf[end - 1] is a newline)."""
        nonlocal size
        while start < end:
            need = block_bytes - size
            if end - start < need:
                pieces.append((buf, start, end))
                size += end - start
                return
            stop = buf.find(b"\n", start + need - 1) + 1  # the end of the line that fills the block
            pieces.append((buf, start, stop))
            size += stop - start
            cut()
            start = stop

    try:
        for chunk in chunks:
            pos = 0
            if held or skipped >= 0:
                nl = chunk.find(b"\n")
                if nl < 0:
                    hold(chunk)
                    continue
                hold(chunk[:nl])
                finish_tail(True)
                pos = nl + 1
            last = chunk.rfind(b"\n", pos)
            if last < 0:
                if pos < len(chunk):
                    hold(chunk[pos:])
            else:
                if last + 1 - pos <= max_bytes:
                    add_run(chunk, pos, last + 1)  # no line in there can be over the cap
                else:
                    run = line = pos
                    while line <= last:
                        nl = chunk.find(b"\n", line)
                        if nl - line > max_bytes:
                            if line > run:
                                add_run(chunk, run, line)
                            pieces.append(LongLine(nl - line))
                            run = nl + 1
                        line = nl + 1
                    if run <= last:
                        add_run(chunk, run, last + 1)
                if last + 1 < len(chunk):
                    hold(chunk[last + 1 :])
            if ready:
                yield from ready
                ready.clear()
    except (zstandard.ZstdError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        yield from ready
        yield _Block(pieces, tell(), f"corrupt or truncated {fmt} stream: {e}")
        return
    if held or skipped >= 0:
        finish_tail(False)
    yield from ready
    yield _Block(pieces, tell())


class _JsonlParser:
    """Blocks of lines -> batches, in order (it counts the lines). The compiled scanner parses;
    a line it refuses or whose text is not a plain string is parsed again by `_parse_line` (the
    `json` module), which decides, so acceptance and messages are exactly those of `json.loads`
    (lone surrogates from escapes, NaN, big integers, a BOM: all as before)."""

    def __init__(self, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int):
        self.name, self.text_field, self.extra_fields, self.cap = name, text_field, extra_fields, max_document_bytes
        self.wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
        # Names as the scanner compares them. A name with a lone surrogate has no UTF-8 form:
        # surrogatepass makes it match no key the scanner decodes (keys with lone surrogates make
        # the line doubtful), so `json` decides every line that holds it.
        encode = lambda name: name.encode("utf-8", "surrogatepass")  # noqa: E731
        self.field_bytes = None if text_field is None else encode(text_field)
        self.keep_bytes = [encode(f) for f in extra_fields]
        self.line_no = 0
        self.input_pos = 0

    def __call__(self, block: _Block) -> Batch:
        return self._scanned(block)

    def _scanned(self, block: _Block) -> Batch:
        """The compiled scanner takes the text (and kept fields) of every line it can
        decide; the rest (rare) are decided here by `json`, and those accepted are put back in
        line order."""
        name = self.name
        pieces = [p.size if isinstance(p, LongLine) else p for p in block.pieces]
        # `json` recurses once per level and counts the frames below it: half the recursion
        # limit leaves it room, and deeper lines are its to decide.
        data, offsets, rows, others, self.line_no, kept = jsonl_texts(pieces, self.line_no, self.field_bytes, self.keep_bytes,
                                                                       sys.getrecursionlimit() // 2)
        texts = pa.Array.from_buffers(pa.large_binary(), len(rows), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        extras = {f: _string_column(*column) for f, column in zip(self.extra_fields, kept)}
        rejects: list[Reject] = []
        accepted: list[tuple[int, int, bytes, list]] = []  # (documents before it, line, text, kept values)
        for long, line_no, piece, start, end, before in others.reshape(-1, 6).tolist():
            if long:
                rejects.append(Reject(name, f"line {line_no}", _too_long(block.pieces[piece].size, self.cap, "line")))
                continue
            obj, value = _parse_line(block.pieces[piece][0][start:end], self.text_field, self.wanted)
            if isinstance(value, _Problem):
                rejects.append(Reject(name, f"line {line_no}", value.reason))
            else:
                # surrogatepass keeps lone surrogates from JSON escapes as invalid UTF-8 bytes.
                accepted.append((before, line_no, value.encode("utf-8", "surrogatepass"), [_extra_value(obj.get(f)) for f in self.extra_fields]))
        if accepted:
            texts, rows, extras = _insert_documents(texts, rows, extras, accepted)
        if block.error is not None:
            rejects.append(Reject(name, f"after line {self.line_no}", block.error))
        consumed, self.input_pos = block.input_pos - self.input_pos, block.input_pos
        return Batch(rows, texts, extras, rejects, consumed)


def _string_column(data: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A large_string array of the scanner's buffers (`valid`: one byte per value, 0 = null)."""
    nulls = len(valid) - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid.astype(bool), bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.large_string(), len(valid), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls)


def _insert_documents(texts: pa.Array, rows: np.ndarray, extras: dict[str, pa.Array],
                      accepted: list[tuple[int, int, bytes, list]]) -> tuple[pa.Array, np.ndarray, dict[str, pa.Array]]:
    """`texts`, `rows` and `extras` with the `accepted` documents (documents before each, line,
    text, kept values in the order of `extras`) inserted in line order."""
    columns = [texts.to_pylist(), rows.tolist(), *(c.to_pylist() for c in extras.values())]
    merged: list[list] = [[] for _ in columns]
    done = 0
    for before, line_no, text, values in accepted:
        for out, column, value in zip(merged, columns, [text, line_no, *values]):
            out += column[done:before]
            out.append(value)
        done = before
    for out, column in zip(merged, columns):
        out += column[done:]
    return (binary_array(merged[0]), np.array(merged[1], dtype=np.int64),
            {f: string_array(values) for f, values in zip(extras, merged[2:])})


def _jsonl(path: Path, name: str, fmt: str, text_field: str | None, extra_fields: list[str], batch_bytes: int,
           max_document_bytes: int, depth: int = 0) -> Iterator[Batch]:
    parse = _JsonlParser(name, text_field, extra_fields, max_document_bytes)
    with open(path, "rb") as raw:
        chunks = {"jsonl": lambda: iter(lambda: raw.read(1 << 20), b""), "jsonl.gz": lambda: _gzip_chunks(raw), "jsonl.zst": lambda: _zstd_chunks(raw)}[fmt]()
        blocks = _line_blocks(chunks, raw.tell, max_document_bytes, batch_bytes, fmt)
        if depth:
            blocks = ahead(blocks, depth, "aunet-read")
        batches = (parse(b) for b in blocks)
        if depth:
            batches = ahead(batches, depth, "aunet-parse")
        try:
            yield from batches
        finally:
            batches.close()  # stops the parsing thread first: it reads `blocks`
            blocks.close()


# ---------------------------------------------------------------- Parquet and Arrow


def _choose_column(schema: pa.Schema, text_field: str | None) -> str | None:
    if text_field is not None:
        return text_field if text_field in schema.names else None
    return next((c for c in ("text", "content") if c in schema.names), None)


def _table_batches(batches: Iterator[pa.RecordBatch], schema: pa.Schema, num_rows: int | None, name: str, text_field: str | None, extra_fields: list[str], file_bytes: int,
                   max_document_bytes: int, batch_bytes: int = 8 << 20) -> Iterator[Batch]:
    """Batches of Arrow record batches, without a Python object per document: the text column
    goes on as Arrow buffers (widened to large_binary without copying the data), nulls and
    over-long values are found with numpy, and a record batch is cut into slices of about
    `batch_bytes` text bytes (where a slice reaches it: a function of the contents), so a large
    row group is segmented and written in pieces."""
    column = _choose_column(schema, text_field)
    wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
    if column is None or schema.field(column).type not in TEXT_TYPES:
        reason = f"missing text column ({wanted})" if column is None else f"text column {column!r} has type {schema.field(column).type}, not string or binary"
        rows = sum(b.num_rows for b in batches) if num_rows is None else num_rows
        yield Batch(np.zeros(0, np.int64), binary_array([]), rejects=[Reject(name, f"rows 0-{rows - 1}", reason, rows)] if rows else [], input_bytes=file_bytes)
        return
    start = 0
    total = num_rows or 0
    for rb in batches:
        n = rb.num_rows
        broken = _broken_columns(rb, [column, *(f for f in extra_fields if f in rb.schema.names)])
        if broken:
            # Offsets that leave their data buffer would be read out of bounds downstream: the
            # batch's rows are rejected together, and the rows after it are read as usual.
            consumed = file_bytes * n // total if total else 0
            yield Batch(np.zeros(0, np.int64), binary_array([]), rejects=[Reject(name, f"rows {start}-{start + n - 1}", f"corrupt Arrow data: {broken}", n)],
                        input_bytes=consumed)
            start += n
            continue
        text = rb.column(column)
        text = text.cast(pa.large_binary()) if text.type != pa.large_binary() else text
        lengths = np.diff(np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + n + 1]) if n else np.zeros(0, np.int64)
        too_long = lengths > max_document_bytes
        bad = too_long if not text.null_count else too_long | ~np.unpackbits(np.frombuffer(text.buffers()[0], np.uint8), count=text.offset + n, bitorder="little")[text.offset :].astype(bool)
        rejects = [Reject(name, f"row {start + i}", f"text column {column!r} is null") if not text[i].is_valid
                   else Reject(name, f"row {start + i}", _too_long(int(lengths[i]), max_document_bytes, f"{column!r} value"))
                   for i in np.flatnonzero(bad).tolist()]
        extra = {}
        for f in extra_fields:
            if f in rb.schema.names:
                col = rb.column(f)
                extra[f] = col.cast(pa.large_string()) if col.type != pa.large_string() else col
            else:
                extra[f] = pa.nulls(n, pa.large_string())
        rows = np.arange(start, start + n, dtype=np.int64)
        if rejects:
            keep = ~bad
            mask = _bool_array(keep)
            text, rows, lengths = text.filter(mask), rows[keep], lengths[keep]
            extra = {f: c.filter(mask) for f, c in extra.items()}
        # Slices end at the document that brings them to `batch_bytes`.
        cum = np.cumsum(lengths)
        cuts = [0]
        while cuts[-1] < len(rows):
            base = cum[cuts[-1] - 1] if cuts[-1] else 0
            cuts.append(min(len(rows), int(np.searchsorted(cum, base + batch_bytes, side="left")) + 1))
        if len(cuts) == 1:
            cuts.append(0)  # no document left: one batch all the same, for the rejects and progress
        consumed = file_bytes * n // total if total else 0
        for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
            yield Batch(rows[a:b], text.slice(a, b - a), {f: c.slice(a, b - a) for f, c in extra.items()}, rejects if j == 0 else [],
                        consumed if j == 0 else 0)
        start += n


def _broken_columns(rb: pa.RecordBatch, names: list[str]) -> str | None:
    """Why the first of `names` whose buffers are inconsistent (offsets out of range or not
    ascending, buffers too short) is corrupt, or None. Text columns are checked as binary, so
    invalid UTF-8 in a string column stays what it was before: bytes to segment."""
    widen = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}
    for name in names:
        col = rb.column(name)
        try:
            (col.view(widen[col.type]) if col.type in widen else col).validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowException) as e:
            return f"column {name!r}: {e}"
    return None


def _parquet(path: Path, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int, batch_bytes: int = 8 << 20,
             depth: int = 0) -> Iterator[Batch]:
    """Only the needed columns, one row group at a time (with `depth`, decoded in a thread ahead)."""
    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        yield Batch.rejected(Reject(name, "file", f"corrupt Parquet file: {e}"), size)
        return
    column = _choose_column(pf.schema_arrow, text_field)
    columns = [c for c in [column, *extra_fields] if c is not None and c in pf.schema_arrow.names]
    done = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal done
        for g in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(g, columns=columns or None)
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
                n = pf.metadata.row_group(g).num_rows
                raise _CorruptGroup(done, n, e) from e
            for rb in table.to_batches():
                done += rb.num_rows
                yield rb

    groups = ahead(batches(), depth, "aunet-read") if depth else batches()
    try:
        yield from _table_batches(groups, pf.schema_arrow, pf.metadata.num_rows, name, text_field, extra_fields, size, max_document_bytes, batch_bytes)
    except _CorruptGroup as e:
        yield Batch.rejected(Reject(name, f"rows {e.start}-{pf.metadata.num_rows - 1}", f"corrupt Parquet data: {e.error}", pf.metadata.num_rows - e.start))
    finally:
        groups.close()


class _CorruptGroup(Exception):
    def __init__(self, start: int, rows: int, error: Exception):
        super().__init__(str(error))
        self.start, self.rows, self.error = start, rows, error


def _arrow(path: Path, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int, batch_bytes: int = 8 << 20,
           depth: int = 0) -> Iterator[Batch]:
    size = path.stat().st_size
    source = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_file(source)
        schema, num_rows = reader.schema, None
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:
            source.seek(0)
            stream = pa.ipc.open_stream(source)
            schema, num_rows, batches = stream.schema, None, iter(stream)
        except pa.ArrowInvalid as e:
            yield Batch.rejected(Reject(name, "file", f"corrupt Arrow IPC file: {e}"), size)
            return
    read = 0

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal read
        for rb in batches:
            read += rb.num_rows
            yield rb

    try:
        yield from _table_batches(counted(), schema, num_rows, name, text_field, extra_fields, 0, max_document_bytes, batch_bytes)
    except (pa.ArrowInvalid, OSError) as e:
        where = f"after row {read - 1}" if read else "file"
        yield Batch.rejected(Reject(name, where, f"corrupt Arrow IPC file: {e}"), size)
