"""Arrow record batches -> `Batch`es: the part that Parquet and Arrow IPC input share.

No Python object per document: the text column goes on as Arrow buffers (widened to
large_binary without copying the data), nulls and over-long values are found with numpy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from aunet.segment.readers.batch import Batch, Reject, binary_array, bool_array, string_array, too_long

TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.string_view(), pa.binary_view())


def is_text_type(t: pa.DataType) -> bool:
    """String or binary, in any layout: plain, large, view, or dictionary-encoded."""
    return t in TEXT_TYPES or (pa.types.is_dictionary(t) and t.value_type in TEXT_TYPES)


def as_large_binary(col: pa.Array) -> pa.Array:
    """A text column of any `is_text_type` as large_binary (the data buffer is not copied for
    the plain layouts; dictionaries are decoded, views are gathered)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col if col.type == pa.large_binary() else col.cast(pa.large_binary())


_AS_BYTES = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary(), pa.string_view(): pa.binary_view()}


def kept_values(col: pa.Array, field: str) -> tuple[pa.Array, dict[int, str]]:
    """A kept field as large_string, and the rows whose value cannot be text, with why. Values
    of nested or other types are kept as JSON text (as the JSONL reader keeps them); binary that
    is not UTF-8 rejects its row, naming the field. Plain string columns cost nothing."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.type in _AS_BYTES:
        try:
            col.validate(full=True)  # a string column's bytes are not checked as UTF-8 until here
            return (col if col.type == pa.large_string() else col.cast(pa.large_string())), {}
        except pa.ArrowInvalid:
            col = col.view(_AS_BYTES[col.type])  # row by row below, as bytes
    elif not pa.types.is_nested(col.type):
        try:
            return col.cast(pa.large_string()), {}
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # invalid UTF-8, or a type without a string cast: row by row below
    values: list[str | None] = []
    bad: dict[int, str] = {}
    for i, v in enumerate(col.to_pylist()):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                bad[i] = f"kept field {field!r} is not valid UTF-8 ({e.reason} at byte {e.start})"
                v = None
        elif v is not None and not isinstance(v, str):
            v = json.dumps(v, ensure_ascii=False, default=str)
        values.append(v)
    return string_array(values), bad


def choose_column(schema: pa.Schema, text_field: str | None) -> str | None:
    if text_field is not None:
        return text_field if text_field in schema.names else None
    return next((c for c in ("text", "content") if c in schema.names), None)


def repeated_columns(schema: pa.Schema, names: list[str]) -> list[str]:
    """Which of `names` the schema has more than once (Arrow allows it; a name cannot choose)."""
    return [n for n in dict.fromkeys(names) if len(schema.get_all_field_indices(n)) > 1]


def table_batches(batches: Iterator[pa.RecordBatch], schema: pa.Schema, num_rows: int | None, name: str, text_field: str | None, extra_fields: list[str], file_bytes: int,
                   max_document_bytes: int, batch_bytes: int = 8 << 20) -> Iterator[Batch]:
    """Batches of Arrow record batches, without a Python object per document: the text column
    goes on as Arrow buffers (widened to large_binary without copying the data), nulls and
    over-long values are found with numpy, and a record batch is cut into slices of about
    `batch_bytes` text bytes (where a slice reaches it: a function of the contents), so a large
    row group is segmented and written in pieces."""
    column = choose_column(schema, text_field)
    wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
    repeated = repeated_columns(schema, [c for c in [column, *extra_fields] if c is not None])
    if column is None or repeated or not is_text_type(schema.field(column).type):
        if repeated:
            reason = "columns named " + ", ".join(f"{n!r} ({len(schema.get_all_field_indices(n))} times)" for n in repeated) + \
                     " appear more than once: the file cannot say which one to read"
        elif column is None:
            reason = f"missing text column ({wanted})"
        else:
            reason = f"text column {column!r} has type {schema.field(column).type}, not string or binary"
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
        text = as_large_binary(rb.column(column))
        lengths = np.diff(np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + n + 1]) if n else np.zeros(0, np.int64)
        over = lengths > max_document_bytes
        bad = over if not text.null_count else over | ~np.unpackbits(np.frombuffer(text.buffers()[0], np.uint8), count=text.offset + n, bitorder="little")[text.offset :].astype(bool)
        why: dict[int, str] = {}
        extra = {}
        for f in extra_fields:
            if f in rb.schema.names:
                extra[f], unkept = kept_values(rb.column(f), f)
                for i, reason in unkept.items():
                    why.setdefault(i, reason)
            else:
                extra[f] = pa.nulls(n, pa.large_string())
        if why:
            bad = bad.copy()
            bad[list(why)] = True
        rejects = [Reject(name, f"row {start + i}", f"text column {column!r} is null") if not text[i].is_valid
                   else Reject(name, f"row {start + i}", too_long(int(lengths[i]), max_document_bytes, f"{column!r} value"))
                   if lengths[i] > max_document_bytes else Reject(name, f"row {start + i}", why[i])
                   for i in np.flatnonzero(bad).tolist()]
        rows = np.arange(start, start + n, dtype=np.int64)
        if rejects:
            keep = ~bad
            mask = bool_array(keep)
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

