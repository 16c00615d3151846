"""Arrow record batches -> `Batch`es: the part that Parquet and Arrow IPC input share.

No Python object per document: the text column goes on as Arrow buffers (widened to
large_binary without copying the data), nulls and over-long values are found with numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from aunet.segment.readers.batch import Batch, Reject, binary_array, bool_array, too_long

TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def choose_column(schema: pa.Schema, text_field: str | None) -> str | None:
    if text_field is not None:
        return text_field if text_field in schema.names else None
    return next((c for c in ("text", "content") if c in schema.names), None)


def table_batches(batches: Iterator[pa.RecordBatch], schema: pa.Schema, num_rows: int | None, name: str, text_field: str | None, extra_fields: list[str], file_bytes: int,
                   max_document_bytes: int, batch_bytes: int = 8 << 20) -> Iterator[Batch]:
    """Batches of Arrow record batches, without a Python object per document: the text column
    goes on as Arrow buffers (widened to large_binary without copying the data), nulls and
    over-long values are found with numpy, and a record batch is cut into slices of about
    `batch_bytes` text bytes (where a slice reaches it: a function of the contents), so a large
    row group is segmented and written in pieces."""
    column = choose_column(schema, text_field)
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
        over = lengths > max_document_bytes
        bad = over if not text.null_count else over | ~np.unpackbits(np.frombuffer(text.buffers()[0], np.uint8), count=text.offset + n, bitorder="little")[text.offset :].astype(bool)
        rejects = [Reject(name, f"row {start + i}", f"text column {column!r} is null") if not text[i].is_valid
                   else Reject(name, f"row {start + i}", too_long(int(lengths[i]), max_document_bytes, f"{column!r} value"))
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

