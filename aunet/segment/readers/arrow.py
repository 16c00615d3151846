"""Arrow IPC input: the file format (memory-mapped), or else the stream format."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from aunet.segment.readers.batch import Batch, Reject
from aunet.segment.readers.registry import InputFile, InputFormat, register
from aunet.segment.readers.table import table_batches


def read_arrow(source: InputFile) -> Iterator[Batch]:
    path, name = source.path, source.name
    size = path.stat().st_size
    mapped = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_file(mapped)
        schema, num_rows = reader.schema, None
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:
            mapped.seek(0)
            stream = pa.ipc.open_stream(mapped)
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
        yield from table_batches(counted(), schema, num_rows, name, source.text_field, source.extra_fields, 0,
                                 source.max_document_bytes, source.batch_bytes)
    except (pa.ArrowInvalid, OSError) as e:
        where = f"after row {read - 1}" if read else "file"
        yield Batch.rejected(Reject(name, where, f"corrupt Arrow IPC file: {e}"), size)


ARROW = register(InputFormat("arrow", "Arrow", (".arrow", ".feather", ".ipc"), read_arrow))
