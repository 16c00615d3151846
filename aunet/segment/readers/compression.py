"""Compression, apart from formats: a file's last suffix may name a codec (`.gz`, `.zst`),
and a streamed format (JSONL) then reads the decompressed bytes, never fully held in memory.

A codec turns an open binary file into decompressed chunks; `decompressed` reports a damaged
or truncated stream as `CorruptStream`, after every chunk that decoded before the damage, so a
reader keeps the documents before it.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

READ_SIZE = 1 << 20


class CorruptStream(Exception):
    """The compressed stream is damaged or ends early (the message is the codec's)."""


@dataclass(frozen=True)
class Codec:
    name: str  # as format names show it: "jsonl.gz"
    suffixes: tuple[str, ...]
    chunks: Callable[[BinaryIO], Iterator[bytes]]


def plain_chunks(raw: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: raw.read(READ_SIZE), b"")


ZSTD_READ_SIZE = 1 << 18
ZSTD_WRITE_SIZE = 4 << 20


def zstd_chunks(raw) -> Iterator[bytes]:
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


def gzip_chunks(raw: BinaryIO) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=raw) as g:
        while chunk := g.read(READ_SIZE):
            yield chunk


CODECS = (Codec("gz", (".gz",), gzip_chunks), Codec("zst", (".zst", ".zstd"), zstd_chunks))
# The errors by which the codecs report damage (BadGzipFile is an OSError: caught here, it is
# not mistaken for an unreadable file).
_STREAM_ERRORS = (zstandard.ZstdError, EOFError, gzip.BadGzipFile, zlib.error)


def codec_of(suffix: str) -> Codec | None:
    """The codec a (lower-case) file suffix names, or None."""
    return next((c for c in CODECS if suffix in c.suffixes), None)


def decompressed(raw: BinaryIO, codec: Codec | None) -> Iterator[bytes]:
    """The bytes of `raw` in chunks, decompressed by `codec` (None: as they are)."""
    if codec is None:
        yield from plain_chunks(raw)
        return
    try:
        yield from codec.chunks(raw)
    except _STREAM_ERRORS as e:
        raise CorruptStream(str(e)) from e
