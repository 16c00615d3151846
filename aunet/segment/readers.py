"""Input corpora for `aunet-segment`: JSONL (plain, .gz, .zst), Parquet and Arrow IPC.

Each reader yields `Batch`es of documents (text bytes and their line/row numbers) together with
the documents it had to reject, so that every document read is either written or counted with
its reason. Compressed JSONL is streamed and never fully decompressed in memory.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow")
TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())

# The longest document (a JSONL line's raw bytes, a Parquet/Arrow text value) that is segmented.
# Segmenting holds several copies of a document at once (its bytes, its decoded code points at
# 4 bytes each, its mask), so one multi-gigabyte "line" (a file without newlines, a dumped
# blob) would need many gigabytes per worker; 64 MiB is still hundreds of times longer than a
# long book, so real documents pass and the model's windows (8 KiB) never notice the cap.
DEFAULT_MAX_DOCUMENT_BYTES = 64 << 20


@dataclass
class Reject:
    file: str
    location: str  # "line 12", "row 5", "rows 0-99", "after line 40"
    reason: str
    count: int = 1


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
        return cls(np.zeros(0, np.int64), pa.array([], pa.large_binary()), rejects=[reject], input_bytes=input_bytes)


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


def read_batches(path: Path, name: str, text_field: str | None, extra_fields: list[str], batch_bytes: int = 8 << 20,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> Iterator[Batch]:
    """Documents of `path`; one longer than `max_document_bytes` is rejected (see
    `DEFAULT_MAX_DOCUMENT_BYTES`)."""
    fmt = detect_format(path)
    try:
        if fmt in ("jsonl", "jsonl.gz", "jsonl.zst"):
            yield from _jsonl(path, name, fmt, text_field, extra_fields, batch_bytes, max_document_bytes)
        elif fmt == "parquet":
            yield from _parquet(path, name, text_field, extra_fields, max_document_bytes)
        elif fmt == "arrow":
            yield from _arrow(path, name, text_field, extra_fields, max_document_bytes)
        else:
            raise ValueError(f"{name}: unsupported input format (expected one of {', '.join(FORMATS)})")
    except OSError as e:
        yield Batch.rejected(Reject(name, "file", f"unreadable: {e.strerror or e}"))


# ---------------------------------------------------------------- JSONL


def _zstd_chunks(raw) -> Iterator[bytes]:
    """Decompressed chunks of every zstd frame in `raw`; a truncated last frame raises."""
    dctx = zstandard.ZstdDecompressor()
    obj, fed = dctx.decompressobj(), False
    while chunk := raw.read(1 << 20):
        data = chunk
        while data:
            fed = True
            out = obj.decompress(data)
            if out:
                yield out
            if obj.eof:
                data, obj, fed = obj.unused_data, dctx.decompressobj(), False
            else:
                data = b""
    if fed and not obj.eof:
        raise zstandard.ZstdError("truncated zstd frame")


def _gzip_chunks(raw) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=raw) as g:
        while chunk := g.read(1 << 20):
            yield chunk


class LongLine:
    """A line longer than the cap, skipped: only its length is kept, not its bytes."""

    def __init__(self, size: int):
        self.size = size


def _lines(chunks: Iterator[bytes], max_bytes: int | None = None) -> Iterator[bytes | LongLine]:
    """The lines of a stream of chunks (without their newline), in time linear in the bytes:
    a line that spans chunks is kept as a list of pieces and joined once, when it ends
    (re-concatenating a growing tail per chunk is quadratic in the line's length). A line
    longer than `max_bytes` comes out as a `LongLine`, and no more than `max_bytes` plus one
    chunk of it is ever held."""
    pieces: list[bytes] = []  # the unfinished line
    held = 0  # bytes in `pieces`
    skipped = -1  # bytes so far of an over-long line being skipped, or -1

    def add(piece: bytes) -> None:
        nonlocal pieces, held, skipped
        if skipped >= 0:
            skipped += len(piece)
            return
        pieces.append(piece)
        held += len(piece)
        if max_bytes is not None and held > max_bytes:
            pieces, held, skipped = [], 0, held

    def finish() -> bytes | LongLine:
        nonlocal pieces, held, skipped
        line = LongLine(skipped) if skipped >= 0 else pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces, held, skipped = [], 0, -1
        return line

    for chunk in chunks:
        parts = chunk.split(b"\n")
        add(parts[0])
        if len(parts) == 1:
            continue  # no newline: the line goes on
        yield finish()
        if max_bytes is None or len(chunk) <= max_bytes:
            yield from parts[1:-1]  # whole lines inside this chunk, none over the cap
        else:
            for line in parts[1:-1]:
                yield line if len(line) <= max_bytes else LongLine(len(line))
        add(parts[-1])
    if held or skipped >= 0:
        yield finish()


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


def _jsonl(path: Path, name: str, fmt: str, text_field: str | None, extra_fields: list[str], batch_bytes: int,
           max_document_bytes: int) -> Iterator[Batch]:
    wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
    with open(path, "rb") as raw:
        chunks = {"jsonl": lambda: iter(lambda: raw.read(1 << 20), b""), "jsonl.gz": lambda: _gzip_chunks(raw), "jsonl.zst": lambda: _zstd_chunks(raw)}[fmt]()
        rows: list[int] = []
        texts: list[bytes] = []
        extras: dict[str, list] = {f: [] for f in extra_fields}
        rejects: list[Reject] = []
        size, last_pos, line_no = 0, 0, 0

        def flush() -> Batch:
            nonlocal rows, texts, extras, rejects, size, last_pos
            pos = raw.tell()
            batch = Batch(
                np.array(rows, dtype=np.int64),
                pa.array(texts, type=pa.large_binary()),
                {f: pa.array(v, type=pa.large_string()) for f, v in extras.items()},
                rejects,
                pos - last_pos,
            )
            rows, texts, extras, rejects, size, last_pos = [], [], {f: [] for f in extra_fields}, [], 0, pos
            return batch

        try:
            for line in _lines(chunks, max_document_bytes):
                line_no += 1
                if isinstance(line, LongLine):
                    rejects.append(Reject(name, f"line {line_no}", _too_long(line.size, max_document_bytes, "line")))
                    continue
                if not line.strip():
                    continue  # blank lines hold no document
                obj, value = _parse_line(line, text_field, wanted)
                if isinstance(value, _Problem):
                    rejects.append(Reject(name, f"line {line_no}", value.reason))
                    continue
                # surrogatepass keeps lone surrogates from JSON escapes, as invalid UTF-8 bytes.
                data = value.encode("utf-8", "surrogatepass")
                rows.append(line_no)
                texts.append(data)
                for f in extra_fields:
                    extras[f].append(_extra_value(obj.get(f)))
                size += len(data)
                if size >= batch_bytes:
                    yield flush()
        except (zstandard.ZstdError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            rejects.append(Reject(name, f"after line {line_no}", f"corrupt or truncated {fmt} stream: {e}"))
        yield flush()


# ---------------------------------------------------------------- Parquet and Arrow


def _choose_column(schema: pa.Schema, text_field: str | None) -> str | None:
    if text_field is not None:
        return text_field if text_field in schema.names else None
    return next((c for c in ("text", "content") if c in schema.names), None)


def _table_batches(batches: Iterator[pa.RecordBatch], schema: pa.Schema, num_rows: int | None, name: str, text_field: str | None, extra_fields: list[str], file_bytes: int,
                   max_document_bytes: int) -> Iterator[Batch]:
    column = _choose_column(schema, text_field)
    wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
    if column is None or schema.field(column).type not in TEXT_TYPES:
        reason = f"missing text column ({wanted})" if column is None else f"text column {column!r} has type {schema.field(column).type}, not string or binary"
        rows = sum(b.num_rows for b in batches) if num_rows is None else num_rows
        yield Batch(np.zeros(0, np.int64), pa.array([], pa.large_binary()), rejects=[Reject(name, f"rows 0-{rows - 1}", reason, rows)] if rows else [], input_bytes=file_bytes)
        return
    start = 0
    total = num_rows or 0
    for rb in batches:
        n = rb.num_rows
        text = rb.column(column)
        text = text.cast(pa.large_binary()) if text.type != pa.large_binary() else text
        valid = np.asarray(text.is_valid())
        lengths = pc.binary_length(text).fill_null(0).to_numpy(zero_copy_only=False)
        too_long = lengths > max_document_bytes
        rejects = [Reject(name, f"row {start + i}", f"text column {column!r} is null") if not valid[i]
                   else Reject(name, f"row {start + i}", _too_long(int(lengths[i]), max_document_bytes, f"{column!r} value"))
                   for i in np.flatnonzero(~valid | too_long)]
        valid = valid & ~too_long
        keep = pa.array(valid)
        extra = {}
        for f in extra_fields:
            if f in rb.schema.names:
                col = rb.column(f)
                extra[f] = col.cast(pa.large_string()) if col.type != pa.large_string() else col
            else:
                extra[f] = pa.nulls(n, pa.large_string())
        rows = np.arange(start, start + n, dtype=np.int64)[valid]
        yield Batch(rows, text.filter(keep), {f: c.filter(keep) for f, c in extra.items()}, rejects, file_bytes * n // total if total else 0)
        start += n


def _parquet(path: Path, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int) -> Iterator[Batch]:
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

    try:
        yield from _table_batches(batches(), pf.schema_arrow, pf.metadata.num_rows, name, text_field, extra_fields, size, max_document_bytes)
    except _CorruptGroup as e:
        yield Batch.rejected(Reject(name, f"rows {e.start}-{pf.metadata.num_rows - 1}", f"corrupt Parquet data: {e.error}", pf.metadata.num_rows - e.start))


class _CorruptGroup(Exception):
    def __init__(self, start: int, rows: int, error: Exception):
        super().__init__(str(error))
        self.start, self.rows, self.error = start, rows, error


def _arrow(path: Path, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int) -> Iterator[Batch]:
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
        yield from _table_batches(counted(), schema, num_rows, name, text_field, extra_fields, 0, max_document_bytes)
    except (pa.ArrowInvalid, OSError) as e:
        where = f"after row {read - 1}" if read else "file"
        yield Batch.rejected(Reject(name, where, f"corrupt Arrow IPC file: {e}"), size)
