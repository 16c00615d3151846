"""Parquet input: only the needed columns, one row group at a time."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from aunet.segment.readers.batch import Batch, Reject
from aunet.segment.readers.prefetch import ahead
from aunet.segment.readers.registry import InputFile, InputFormat, register
from aunet.segment.readers.table import choose_column, table_batches


def read_parquet(source: InputFile) -> Iterator[Batch]:
    """With `source.ahead`, row groups are decoded in a thread ahead."""
    path, name, text_field, extra_fields = source.path, source.name, source.text_field, source.extra_fields
    depth = source.ahead
    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        yield Batch.rejected(Reject(name, "file", f"corrupt Parquet file: {e}"), size)
        return
    column = choose_column(pf.schema_arrow, text_field)
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
        yield from table_batches(groups, pf.schema_arrow, pf.metadata.num_rows, name, text_field, extra_fields, size,
                                 source.max_document_bytes, source.batch_bytes)
    except _CorruptGroup as e:
        yield Batch.rejected(Reject(name, f"rows {e.start}-{pf.metadata.num_rows - 1}", f"corrupt Parquet data: {e.error}", pf.metadata.num_rows - e.start))
    finally:
        groups.close()


class _CorruptGroup(Exception):
    def __init__(self, start: int, rows: int, error: Exception):
        super().__init__(str(error))
        self.start, self.rows, self.error = start, rows, error


PARQUET = register(InputFormat("parquet", "Parquet", (".parquet", ".pq"), read_parquet))
