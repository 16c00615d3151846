"""The compiled JSONL text scanner against the contract, `json.loads`: on any line, the reader's
fast path (`jsonl_texts` + the `json` fallback for the lines it leaves) accepts the same lines
with the same text bytes, and rejects the same lines, as `json.loads` alone."""

from __future__ import annotations

import json
import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aunet.segment.readers.jsonl import JsonlParser
from aunet.segment.readers.lines import Block, LongLine
from helpers import examples


def kept_value(value):
    """A kept field as the shards carry it: strings and null as they are (a lone surrogate as
    the text of its escape), other values as JSON."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode()


def reference(lines: list[bytes | LongLine], field: str | None, keep: tuple[str, ...] = ()) -> tuple[list[int], list[bytes], list[int], dict]:
    """(rows, texts, rejected rows, kept values) by `json.loads` alone, one line at a time."""
    rows, texts, rejected, kept = [], [], [], {f: [] for f in keep}
    for number, line in enumerate(lines, 1):
        if isinstance(line, LongLine):
            rejected.append(number)
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            rejected.append(number)
            continue
        if not isinstance(obj, dict):
            rejected.append(number)
            continue
        key = field if field is not None else ("text" if "text" in obj else "content")
        if not isinstance(obj.get(key), str):
            rejected.append(number)
            continue
        rows.append(number)
        texts.append(obj[key].encode("utf-8", "surrogatepass"))
        for f in keep:
            kept[f].append(kept_value(obj.get(f)))
    return rows, texts, rejected, kept


def fast(lines: list[bytes | LongLine], field: str | None, split: int = 0, keep: tuple[str, ...] = ()) -> tuple[list[int], list[bytes], list[int], dict]:
    """The reader's fast path over one block; `split` > 0 cuts the lines into pieces of that
    many lines (as chunks of a stream arrive), long lines being pieces of their own."""
    pieces, run = [], []

    def flush():
        if run:
            buf = b"".join(x + b"\n" for x in run)
            pieces.append((buf, 0, len(buf)))
            run.clear()

    for line in lines:
        if isinstance(line, LongLine):
            flush()
            pieces.append(line)
        else:
            run.append(line)
            if split and len(run) >= split:
                flush()
    flush()
    parser = JsonlParser("corpus.jsonl", field, list(keep), 1 << 20)
    batch = parser(Block(pieces, 0))
    assert parser.line_no == len(lines)
    lengths = np.diff(np.frombuffer(batch.texts.buffers()[1], np.int64)[: batch.documents + 1])
    assert len(lengths) == batch.documents
    for f in keep:
        assert batch.extra[f].type == "large_string" and len(batch.extra[f]) == batch.documents
    return (batch.rows.tolist(), batch.texts.to_pylist(), [int(r.location.removeprefix("line ")) for r in batch.rejects],
            {f: batch.extra[f].to_pylist() for f in keep})


EDGE_LINES = [
    b'{"text": "plain"}',
    b'{"text": "\\u00e9t\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t"}',
    b'{"text": "\\ud800 lone high"}',
    b'{"text": "\\udc00 lone low"}',
    b'{"text": "\\ud800\\u0041 high then letter"}',
    b'{"text": "a", "text": "last wins"}',
    b'{"text": "a", "text": 5}',
    b'{"content": "c only"}',
    b'{"content": "c", "text": "t"}',
    b'{"te\\u0078t": "escaped key"}',
    b'{"text": "x", "n": NaN}',
    b'{"text": "x", "n": -Infinity}',
    b'{"text": "x", "big": 123456789012345678901234567890}',
    b'{"text": "x", "n": 1' + b"0" * 4300 + b"}",  # past Python's int conversion limit: json refuses it
    b'{"text": "x", "n": [-1' + b"0" * 5000 + b"]}",
    b'{"text": "x", "n": 1' + b"0" * 5000 + b'.5, "e": 1' + b"0" * 5000 + b"e2}",  # floats have no such limit
    b'{"\\ud800": "a key with a lone surrogate", "text": "t"}',
    b'{"text": "k", "id": "i-\\u00e9", "url": null}',
    b'{"text": "k", "id": 12, "url": "u"}',
    b'{"text": "k", "id": -0, "url": false}',
    b'{"text": "k", "id": -9223372036854775809, "url": 0}',
    b'{"text": "k", "id": 1.5e3, "url": true}',
    b'{"text": "k", "id": {"a": [1, "\\u00e9"]}, "url": ["x"]}',
    b'{"text": "k", "id": "first", "id": "last"}',
    b'{"text": "k", "id": "\\ud800 lone"}',
    b'{"text": "k", "id": 123456789012345678901234567890}',
    b'{"text": "x", "f": -0.5e-10, "l": [true, false, null, {}, []]}',
    b'\xef\xbb\xbf{"text": "bom"}',
    b'{"text": "utf-8 surrogate \xed\xa0\x80"}',
    b'{"text": "invalid \xff byte"}',
    b'{"text": "raw\ttab"}',
    b'{"text": "x"} trailing',
    b'{"text": "x",}',
    b'{"text": "x"}\r',
    b'   {"text" :  "spaced"  }   ',
    b'{"text": "x"}\x0c',
    b'["text", "array"]',
    b'"just a string"',
    b'{}',
    b'',
    b'   \t',
    b'{"text": "x", "n": 01}',
    b'{"text": "x", "n": 1.}',
    b'{"text": "x", "n": .5}',
    b'{"text": "\\u0000 nul"}',
    b'{"text": "x", "deep": ' + b"[" * 200 + b"]" * 200 + b"}",
    b'{"text": "x", "deep": ' + b"[" * 600 + b"]" * 600 + b"}",
    b'{"body": "other field", "text": "t"}',
    b'{"text": "\\x"}',
    b'{"text": "\\u12"}',
    '{"text": "Привет, 世界, कोड"}'.encode(),
    b'{"text" "missing colon"}',
    b'{"text": "unterminated',
]


def test_edge_lines_match_json_loads():
    lines = [*EDGE_LINES, LongLine(5 << 20), b'{"text": "after the long line"}']
    for field in (None, "body", "text", "\ud800"):
        for split in (0, 1, 3):
            for keep in ((), ("id",), ("id", "url", "\ud800")):
                assert fast(lines, field, split, keep) == reference(lines, field, keep), (field, split, keep)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
keys = st.sampled_from(["text", "content", "id", "url", "body"]) | st.text(max_size=6)
documents = st.lists(st.tuples(keys, st.one_of(st.text(), json_values)), max_size=6)


@st.composite
def jsonl_lines(draw) -> bytes:
    pairs = draw(documents)
    body = ", ".join(f"{json.dumps(k, ensure_ascii=draw(st.booleans()))}: {json.dumps(v, ensure_ascii=draw(st.booleans()))}" for k, v in pairs)
    line = ("{" + body + "}").encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "byte"]))
    if damage == "cut" and line:
        line = line[: draw(st.integers(0, len(line) - 1))]
    elif damage == "byte" and line:
        at = draw(st.integers(0, len(line) - 1))
        line = line[:at] + bytes([draw(st.sampled_from(b'"\\{}[],:\x00\x1f\xff 0aN'))]) + line[at + 1 :]
    return line.replace(b"\n", b"\\n")


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(jsonl_lines(), min_size=1, max_size=12), st.sampled_from([None, "body", "id"]), st.integers(0, 3),
       st.sampled_from([(), ("id",), ("url", "id")]))
def test_generated_lines_match_json_loads(lines, field, split, keep):
    assert fast(lines, field, split, keep) == reference(lines, field, keep)


def test_lowered_recursion_limit_is_respected():
    """`json`'s nesting limit is the runtime recursion limit: the scanner leaves deeper lines
    to it, so both paths agree whatever the limit."""
    import sys

    lines = [b'{"text": "x", "n": ' + b"[" * n + b"]" * n + b"}" for n in (50, 120, 180, 260, 400)]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        assert fast(lines, None) == reference(lines, None)
        assert fast(lines, None, keep=("id",)) == reference(lines, None, ("id",))
    finally:
        sys.setrecursionlimit(limit)


def test_text_field_must_be_a_name():
    import pytest

    from aunet import segment_corpus
    from aunet.segment import InvalidRequest

    for bad in (5, ""):
        with pytest.raises(InvalidRequest, match="text_field"):
            segment_corpus("nowhere.jsonl", "out", {"word1": "1@1"}, text_field=bad)


def test_printable_text_is_taken_by_the_scanner_itself():
    """The common case never reaches the `json` fallback: a block of ordinary documents comes
    back from the compiled call with no line left over (so the fast path is really used)."""
    from aunet._segmenter import jsonl_texts

    docs = [json.dumps({"id": f"doc-{i}", "text": string.printable * (i % 5) + "é世"}, ensure_ascii=i % 2 == 0).encode() for i in range(200)]
    buf = b"\n".join(docs) + b"\n"
    scanned = jsonl_texts([(buf, 0, len(buf))], 0, None)
    data, offsets, rows = scanned.data, scanned.offsets, scanned.lines
    assert scanned.last_line == 200 and len(scanned.others) == 0 and scanned.kept == []
    with_ids = jsonl_texts([(buf, 0, len(buf))], 0, None, [b"id"])
    [kept] = with_ids.kept
    ids, id_offsets, valid = kept.data, kept.offsets, kept.valid
    assert len(with_ids.others) == 0 and valid.all()
    assert [bytes(ids[a:b]).decode() for a, b in zip(id_offsets[:-1], id_offsets[1:])] == [f"doc-{i}" for i in range(200)]
    assert rows.tolist() == list(range(1, 201))
    assert [bytes(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:])] == [json.loads(d)["text"].encode() for d in docs]


def test_a_line_nested_past_the_json_module_limit_is_a_rejected_document(tmp_path):
    """Neither parser takes it (the scanner stops at 512 levels, `json` raises RecursionError):
    it is rejected with its file and line, and the documents around it are written."""
    from aunet import segment_corpus

    deep = b'{"text": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (tmp_path / "in.jsonl").write_bytes(b'{"text": "before"}\n' + deep + b'\n{"text": "after"}\n')
    manifest = segment_corpus(tmp_path / "in.jsonl", tmp_path / "out", {"word1": "1@1"}, on_error="skip", progress=False)
    assert (manifest.documents_written, manifest.documents_rejected) == (2, 1)
    [reject] = [json.loads(line) for line in (tmp_path / "out" / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    assert reject["file"].endswith("in.jsonl") and reject["location"] == "line 2" and "nested more deeply" in reject["reason"]
