"""Input corpora for `aunet-segment`: one module per format, found by file suffix.

`read_batches(path, ...)` yields `Batch`es of documents (text bytes and their line/row numbers)
together with the documents it had to reject, so that every document read is either written
or counted with its reason.

- `registry`: the formats by suffix, and `read_batches`;
- `jsonl`, `parquet`, `arrow`: one format each, registered when imported (below, in the order
  messages list them);
- `compression`: `.gz` / `.zst`, decompressed as a stream for any streamed format;
- `lines`: blocks of whole lines for line formats; `table`: Arrow record batches to `Batch`es;
- `batch`: `Batch`, `Reject` and array helpers; `prefetch`: `ahead`, the pipeline thread.
"""

# Each format module registers itself when imported, in this order (the order messages list).
from aunet.segment.readers import jsonl  # noqa: F401, I001
from aunet.segment.readers import parquet  # noqa: F401, I001
from aunet.segment.readers import arrow  # noqa: F401, I001
from aunet.segment.readers.batch import DEFAULT_MAX_DOCUMENT_BYTES, Batch, Reject, int64_array
from aunet.segment.readers.prefetch import ahead
from aunet.segment.readers.registry import InputFile, InputFormat, detect_format, expected_suffixes, format_labels, read_batches, register

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES", "Batch", "Reject", "InputFile", "InputFormat", "ahead", "detect_format", "expected_suffixes",
    "format_labels", "int64_array", "read_batches", "register",
]
