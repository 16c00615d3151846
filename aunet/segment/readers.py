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
import pyarrow.parquet as pq
import zstandard

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow")
TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


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


def read_batches(path: Path, name: str, text_field: str | None, extra_fields: list[str], batch_bytes: int = 8 << 20) -> Iterator[Batch]:
    fmt = detect_format(path)
    try:
        if fmt in ("jsonl", "jsonl.gz", "jsonl.zst"):
            yield from _jsonl(path, name, fmt, text_field, extra_fields, batch_bytes)
        elif fmt == "parquet":
            yield from _parquet(path, name, text_field, extra_fields)
        elif fmt == "arrow":
            yield from _arrow(path, name, text_field, extra_fields)
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


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    tail = b""
    for chunk in chunks:
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail:
        yield tail


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


def _jsonl(path: Path, name: str, fmt: str, text_field: str | None, extra_fields: list[str], batch_bytes: int) -> Iterator[Batch]:
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
            for line in _lines(chunks):
                line_no += 1
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


def _table_batches(batches: Iterator[pa.RecordBatch], schema: pa.Schema, num_rows: int | None, name: str, text_field: str | None, extra_fields: list[str], file_bytes: int) -> Iterator[Batch]:
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
        rejects = [Reject(name, f"row {start + i}", f"text column {column!r} is null") for i in np.flatnonzero(~valid)]
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


def _parquet(path: Path, name: str, text_field: str | None, extra_fields: list[str]) -> Iterator[Batch]:
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
        yield from _table_batches(batches(), pf.schema_arrow, pf.metadata.num_rows, name, text_field, extra_fields, size)
    except _CorruptGroup as e:
        yield Batch.rejected(Reject(name, f"rows {e.start}-{pf.metadata.num_rows - 1}", f"corrupt Parquet data: {e.error}", pf.metadata.num_rows - e.start))


class _CorruptGroup(Exception):
    def __init__(self, start: int, rows: int, error: Exception):
        super().__init__(str(error))
        self.start, self.rows, self.error = start, rows, error


def _arrow(path: Path, name: str, text_field: str | None, extra_fields: list[str]) -> Iterator[Batch]:
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
        yield from _table_batches(counted(), schema, num_rows, name, text_field, extra_fields, 0)
    except (pa.ArrowInvalid, OSError) as e:
        where = f"after row {read - 1}" if read else "file"
        yield Batch.rejected(Reject(name, where, f"corrupt Arrow IPC file: {e}"), size)
