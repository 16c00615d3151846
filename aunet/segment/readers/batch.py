"""What a reader yields: `Batch`es of documents, each with the documents it had to reject.

Every document read is either written or counted with its reason (`Reject`). Arrays are built
from buffers: `pa.array` on a Python list or a numpy array imports pandas (a quarter of a
second per worker process) when it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

# The longest document (a JSONL line's raw bytes, a Parquet/Arrow text value) that is segmented.
# Segmenting holds several copies of a document at once (its bytes, its decoded code points at
# 4 bytes each, its mask), so one multi-gigabyte "line" (a file without newlines, a dumped
# blob) would need many gigabytes per worker; 64 MiB is still hundreds of times longer than a
# long book, so real documents pass and the model's windows (8 KiB) never notice the cap.
DEFAULT_MAX_DOCUMENT_BYTES = 64 << 20


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


def bool_array(values: np.ndarray) -> pa.Array:
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



def too_long(size: int, cap: int, what: str) -> str:
    return f"document too long: {what} of {size:,} bytes is over max_document_bytes ({cap:,})"
