"""JSONL input (plain, or compressed: see `compression`), one document per line.

The file is read in blocks of whole lines (about `batch_bytes` each, cut by content only). The
text field (and kept fields whose values are strings or null) is taken out of each line by the
compiled scanner (`aunet._segmenter.jsonl_texts`, GIL released, no Python object per
document). A line it cannot decide exactly (invalid JSON, a text that is not a plain string, a
kept value of another type, NaN, lone surrogates...) goes through the standard `json` module,
so what is accepted, every rejection message and every kept value are exactly `json.loads`'s.
With `ahead` > 0 the stages (decompressing and cutting lines; parsing) run in threads of their
own, a few blocks ahead of the consumer; the batches are the same either way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from aunet._segmenter import jsonl_texts
from aunet.segment.readers.batch import Batch, Reject, binary_array, string_array, too_long
from aunet.segment.readers.compression import decompressed
from aunet.segment.readers.lines import Block, LongLine, line_blocks
from aunet.segment.readers.prefetch import ahead
from aunet.segment.readers.registry import InputFile, InputFormat, register


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
    except RecursionError:
        # `json` recurses per nesting level: a line of thousands of brackets is a bad document,
        # not a crash of the whole run.
        return None, _Problem(f"malformed JSON: nested more deeply than the json module allows ({sys.getrecursionlimit()} levels)")
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


class JsonlParser:
    """Blocks of lines -> batches, in order (it counts the lines). The compiled scanner parses;
    a line it refuses or whose text is not a plain string is parsed again by `_parse_line` (the
    `json` module), which decides, so acceptance and messages are exactly those of `json.loads`
    (lone surrogates from escapes, NaN, big integers, a BOM: all as before)."""

    def __init__(self, name: str, text_field: str | None, extra_fields: list[str], max_document_bytes: int):
        self.name, self.text_field, self.extra_fields, self.cap = name, text_field, extra_fields, max_document_bytes
        self.wanted = f"{text_field!r}" if text_field else "'text' or 'content'"
        # Names as the scanner compares them. A name with a lone surrogate has no UTF-8 form:
        # surrogatepass makes it match no key the scanner decodes (keys with lone surrogates make
        # the line doubtful), so `json` decides every line that holds it.
        encode = lambda name: name.encode("utf-8", "surrogatepass")  # noqa: E731
        self.field_bytes = None if text_field is None else encode(text_field)
        self.keep_bytes = [encode(f) for f in extra_fields]
        self.line_no = 0
        self.input_pos = 0

    def __call__(self, block: Block) -> Batch:
        return self._scanned(block)

    def _scanned(self, block: Block) -> Batch:
        """The compiled scanner takes the text (and kept fields) of every line it can
        decide; the rest (rare) are decided here by `json`, and those accepted are put back in
        line order."""
        name = self.name
        pieces = [p.size if isinstance(p, LongLine) else p for p in block.pieces]
        # `json` recurses once per level and counts the frames below it: half the recursion
        # limit leaves it room, and deeper lines are its to decide.
        scanned = jsonl_texts(pieces, self.line_no, self.field_bytes, self.keep_bytes, sys.getrecursionlimit() // 2)
        self.line_no, rows = scanned.last_line, scanned.lines
        texts = pa.Array.from_buffers(pa.large_binary(), len(rows), [None, pa.py_buffer(scanned.offsets), pa.py_buffer(scanned.data)])
        extras = {f: _string_column(column.data, column.offsets, column.valid) for f, column in zip(self.extra_fields, scanned.kept)}
        rejects: list[Reject] = []
        accepted: list[tuple[int, int, bytes, list]] = []  # (documents before it, line, text, kept values)
        for other in scanned.others:
            if other.long:
                rejects.append(Reject(name, f"line {other.line}", too_long(block.pieces[other.piece].size, self.cap, "line")))
                continue
            obj, value = _parse_line(block.pieces[other.piece][0][other.start:other.end], self.text_field, self.wanted)
            if isinstance(value, _Problem):
                rejects.append(Reject(name, f"line {other.line}", value.reason))
            else:
                # surrogatepass keeps lone surrogates from JSON escapes as invalid UTF-8 bytes.
                accepted.append((other.documents_before, other.line, value.encode("utf-8", "surrogatepass"), [_extra_value(obj.get(f)) for f in self.extra_fields]))
        if accepted:
            texts, rows, extras = _insert_documents(texts, rows, extras, accepted)
        if block.error is not None:
            rejects.append(Reject(name, f"after line {self.line_no}", block.error))
        consumed, self.input_pos = block.input_pos - self.input_pos, block.input_pos
        return Batch(rows, texts, extras, rejects, consumed)


def _string_column(data: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A large_string array of the scanner's buffers (`valid`: one byte per value, 0 = null)."""
    nulls = len(valid) - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid.astype(bool), bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.large_string(), len(valid), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)], null_count=nulls)


def _insert_documents(texts: pa.Array, rows: np.ndarray, extras: dict[str, pa.Array],
                      accepted: list[tuple[int, int, bytes, list]]) -> tuple[pa.Array, np.ndarray, dict[str, pa.Array]]:
    """`texts`, `rows` and `extras` with the `accepted` documents (documents before each, line,
    text, kept values in the order of `extras`) inserted in line order."""
    columns = [texts.to_pylist(), rows.tolist(), *(c.to_pylist() for c in extras.values())]
    merged: list[list] = [[] for _ in columns]
    done = 0
    for before, line_no, text, values in accepted:
        for out, column, value in zip(merged, columns, [text, line_no, *values]):
            out += column[done:before]
            out.append(value)
        done = before
    for out, column in zip(merged, columns):
        out += column[done:]
    return (binary_array(merged[0]), np.array(merged[1], dtype=np.int64),
            {f: string_array(values) for f, values in zip(extras, merged[2:])})


def read_jsonl(source: InputFile) -> Iterator[Batch]:
    parse = JsonlParser(source.name, source.text_field, source.extra_fields, source.max_document_bytes)
    depth = source.ahead
    with open(source.path, "rb") as raw:
        chunks = decompressed(raw, source.codec)
        blocks = line_blocks(chunks, raw.tell, source.max_document_bytes, source.batch_bytes, source.kind)
        if depth:
            blocks = ahead(blocks, depth, "aunet-read")
        batches = (parse(b) for b in blocks)
        if depth:
            batches = ahead(batches, depth, "aunet-parse")
        try:
            yield from batches
        finally:
            batches.close()  # stops the parsing thread first: it reads `blocks`
            blocks.close()


JSONL = register(InputFormat("jsonl", "JSONL", (".jsonl", ".json", ".ndjson"), read_jsonl, streamed=True))
