"""Blocks of whole lines cut from a stream of byte chunks: the splitter of line formats (JSONL).

Blocks are a function of the contents alone (never of how the stream was chunked), so the
batches made of them, and the shards, are too. Lines are not copied, except one that spans
chunks; a line over the document cap is skipped, keeping only its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from aunet.segment.readers.compression import CorruptStream


class LongLine:
    """A line longer than the cap, skipped: only its length is kept, not its bytes."""

    def __init__(self, size: int):
        self.size = size



@dataclass
class Block:
    """Whole lines of a JSONL stream, in order: `pieces` are (buffer, start, end) ranges of
    complete lines (the last line of a file may lack its newline) or `LongLine`s."""

    pieces: list
    input_pos: int  # source bytes read when the block was cut (for progress)
    error: str | None = None  # the stream broke after these lines


def line_blocks(chunks: Iterator[bytes], tell, max_bytes: int, block_bytes: int, fmt: str) -> Iterator[Block]:
    """The lines of a stream of chunks, in blocks of whole lines. A block ends with the line
    during which it reaches `block_bytes` bytes, so blocks (and the batches made of them) are
    a function of the contents alone, whatever the chunks. Lines are not copied, except one
    that spans chunks, joined once when it ends (linear time). A line longer than `max_bytes`
    (newline excluded) becomes a `LongLine`, and no more than `max_bytes` plus one chunk of it
    is ever held. A broken stream ends with a block that holds the complete lines before the
    damage and says why (`error`)."""
    pieces: list = []
    size = 0  # bytes in `pieces`, newlines included
    ready: list[Block] = []
    tail: list = []  # the unfinished line
    held = 0  # bytes in `tail`
    skipped = -1  # bytes so far of an over-long unfinished line, or -1

    def hold(part) -> None:
        nonlocal tail, held, skipped
        if skipped >= 0:
            skipped += len(part)
            return
        tail.append(part)
        held += len(part)
        if held > max_bytes:
            tail, held, skipped = [], 0, held

    def finish_tail(with_newline: bool) -> None:
        nonlocal tail, held, skipped, size
        if skipped >= 0:
            pieces.append(LongLine(skipped))
        else:
            line = tail[0] if len(tail) == 1 and isinstance(tail[0], bytes) else b"".join(tail)
            pieces.append((line, 0, len(line)))
            size += len(line) + with_newline
        tail, held, skipped = [], 0, -1
        if size >= block_bytes:
            cut()

    def cut() -> None:
        nonlocal pieces, size
        ready.append(Block(pieces, tell()))
        pieces, size = [], 0

    def add_run(buf: bytes, start: int, end: int) -> None:
        """Whole lines buf[start:end] (buf[end - 1] is a newline)."""
        nonlocal size
        while start < end:
            need = block_bytes - size
            if end - start < need:
                pieces.append((buf, start, end))
                size += end - start
                return
            stop = buf.find(b"\n", start + need - 1) + 1  # the end of the line that fills the block
            pieces.append((buf, start, stop))
            size += stop - start
            cut()
            start = stop

    try:
        for chunk in chunks:
            pos = 0
            if held or skipped >= 0:
                nl = chunk.find(b"\n")
                if nl < 0:
                    hold(chunk)
                    continue
                hold(chunk[:nl])
                finish_tail(True)
                pos = nl + 1
            last = chunk.rfind(b"\n", pos)
            if last < 0:
                if pos < len(chunk):
                    hold(chunk[pos:])
            else:
                if last + 1 - pos <= max_bytes:
                    add_run(chunk, pos, last + 1)  # no line in there can be over the cap
                else:
                    run = line = pos
                    while line <= last:
                        nl = chunk.find(b"\n", line)
                        if nl - line > max_bytes:
                            if line > run:
                                add_run(chunk, run, line)
                            pieces.append(LongLine(nl - line))
                            run = nl + 1
                        line = nl + 1
                    if run <= last:
                        add_run(chunk, run, last + 1)
                if last + 1 < len(chunk):
                    hold(chunk[last + 1 :])
            if ready:
                yield from ready
                ready.clear()
    except CorruptStream as e:
        yield from ready
        yield Block(pieces, tell(), f"corrupt or truncated {fmt} stream: {e}")
        return
    if held or skipped >= 0:
        finish_tail(False)
    yield from ready
    yield Block(pieces, tell())


def split_lines(chunks: Iterator[bytes], max_bytes: int | None = None) -> Iterator[bytes | LongLine]:
    """The lines (without their newline) that `line_blocks` cuts from a stream of chunks, one
    by one: the line splitter of line formats, for callers and tests that want lines."""
    cap = max_bytes if max_bytes is not None else 1 << 62
    for block in line_blocks(chunks, lambda: 0, cap, 1 << 62, "jsonl"):
        for piece in block.pieces:
            if isinstance(piece, LongLine):
                yield piece
                continue
            buf, start, end = piece
            while start < end:
                nl = buf.find(b"\n", start, end)
                stop = end if nl < 0 else nl
                yield buf[start:stop]
                start = stop + 1

