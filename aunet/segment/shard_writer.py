"""Shard files written from record batches: numbered, near a target size, checksummed while
written, published under their final name only when complete.

One writer serves `aunet-segment` (a local directory) and the datatrove writer (any fsspec
filesystem through a datatrove `DataFolder`); the difference is the `ShardFiles` it is given.
"""

from __future__ import annotations

import errno
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from aunet.segment.errors import SegmentError
from aunet.segment.layout import shard_name
from aunet.segment.shards import CHECKSUM_ALGORITHM, ShardInfo, new_hasher


class LocalFiles:
    """Shards in a local directory: fsynced, then renamed into place (atomic on POSIX)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def create(self, name: str):
        return open(self.directory / name, "wb")

    def publish(self, tmp: str, final: str) -> None:
        os.replace(self.directory / tmp, self.directory / final)

    def remove(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def describe(self, name: str) -> str:
        return str(self.directory / name)


class FolderFiles:
    """Shards in a datatrove `DataFolder` (local, s3://, memory://...): written under the
    temporary name and moved to the final one, as the filesystem allows."""

    def __init__(self, folder):
        self.folder = folder

    def create(self, name: str):
        return self.folder.open(name, "wb")

    def publish(self, tmp: str, final: str) -> None:
        self.folder.mv(tmp, final)

    def remove(self, name: str) -> None:
        if self.folder.exists(name):
            self.folder.rm(name)

    def describe(self, name: str) -> str:
        return f"{getattr(self.folder, 'path', '')}/{name}"


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what goes through it, so a shard's checksum costs no
    second read of the shard.

    XXH3-128 (`CHECKSUM_ALGORITHM`), not SHA-256: the checksum is there to detect damage, not
    tampering, and it runs over every byte written (text and mask: about 2 bytes per text
    byte), where SHA-256 (~1.5 GB/s) was the largest cost after segmentation. python-xxhash
    releases the GIL around every `update`, whatever its size (Py_BEGIN_ALLOW_THREADS in its C
    code; measured: another Python thread keeps running during a 512 MiB update), so hashing
    does not stall the process's other threads either."""

    def __init__(self, f):
        self._f = f
        self._hash = new_hasher(CHECKSUM_ALGORITHM)
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._hash.update(data)
        n = self._f.write(data)
        self._size += n if n is not None else len(data)
        return n if n is not None else len(data)

    def finish(self) -> tuple[int, str]:
        self._f.flush()
        try:
            fd = self._f.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = None  # object stores make a file durable when it is closed
        if fd is not None:
            try:
                os.fsync(fd)  # local files: durable before they are renamed
            except OSError as e:
                # Only "this file cannot be synced" is no error; EIO, ENOSPC... mean lost data.
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        self._f.close()
        return self._size, f"{CHECKSUM_ALGORITHM}:{self._hash.hexdigest()}"  # as `file_checksum` writes it

    def discard(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass  # the error being reported is the write's


class ShardWriter:
    """Writes record batches into shards `layout.shard_name(index, j)` of about `shard_bytes` text
    bytes each; `shards` lists the finished ones."""

    def __init__(self, files, index: int, schema: pa.Schema, shard_bytes: int, compression: str, generation: int = 0):
        self.files, self.index, self.schema, self.shard_bytes = files, index, schema, shard_bytes
        self.generation = generation
        self.write_options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        self.shards: list[ShardInfo] = []
        self._writer = None
        self._sink: _HashingFile | None = None
        self._tmp: str | None = None
        self._docs = self._bytes = 0
        self._batches: list[list[int]] = []

    def write(self, batch: pa.RecordBatch, lengths: np.ndarray) -> None:
        """Write `batch` (whose documents have `lengths` text bytes), closing a shard each time
        it reaches the target size, so shards stay near the target whatever the batch size."""
        start = 0
        while start < batch.num_rows:
            room = self.shard_bytes - self._bytes
            cum = np.cumsum(lengths[start:])
            # Rows up to and including the one that reaches the target go to this shard.
            take = int(np.searchsorted(cum, room, side="left")) + 1
            take = min(take, batch.num_rows - start)
            self._write_slice(batch.slice(start, take), int(cum[take - 1]))
            start += take

    def _write_slice(self, batch: pa.RecordBatch, text_bytes: int) -> None:
        with self._failing_loudly():
            self._write_slice_unguarded(batch, text_bytes)

    @contextmanager
    def _failing_loudly(self):
        """A write, fsync or close error (a full disk, a quota, an I/O error) fails the file
        with one line naming the shard, and its temporary is removed: nothing half-written is
        left, nothing is listed that is not there (SPEC section 8)."""
        try:
            yield
        except OSError as e:  # pyarrow raises its IO errors as OSError subclasses too
            name = self._tmp
            self.abort()
            reason = e.strerror or str(e) or type(e).__name__
            where = self.files.describe(name.removesuffix(".tmp")) if name else "a shard"
            raise SegmentError(f"{where}: cannot write the shard: {reason}", file=where) from e

    def abort(self) -> None:
        """Drop the shard being written (its temporary file included)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, ValueError):
                pass
        if self._sink is not None:
            self._sink.discard()
        if self._tmp is not None:
            try:
                self.files.remove(self._tmp)
            except OSError:
                pass  # the write's error is the one to report
        self._writer, self._sink, self._tmp, self._docs, self._bytes, self._batches = None, None, None, 0, 0, []

    def _write_slice_unguarded(self, batch: pa.RecordBatch, text_bytes: int) -> None:
        if self._writer is None:
            self._tmp = shard_name(self.index, len(self.shards), self.generation) + ".tmp"
            self._sink = _HashingFile(self.files.create(self._tmp))
            self._writer = pa.ipc.new_file(pa.PythonFile(self._sink, mode="w"), self.schema, options=self.write_options)
        self._writer.write_batch(batch)
        self._batches.append([batch.num_rows, text_bytes])
        self._docs += batch.num_rows
        self._bytes += text_bytes
        if self._bytes >= self.shard_bytes:
            self.close_shard()

    def close_shard(self) -> None:
        if self._writer is None:
            return
        with self._failing_loudly():
            self._close_shard()

    def _close_shard(self) -> None:
        self._writer.close()
        size, digest = self._sink.finish()
        final = self._tmp.removesuffix(".tmp")
        self.files.publish(self._tmp, final)
        self.shards.append(ShardInfo(final, self._docs, self._bytes, size, digest, self._batches))
        self._writer, self._sink, self._tmp, self._docs, self._bytes, self._batches = None, None, None, 0, 0, []
