"""aunet-segment on bad input: fail names file and line/row; skip records every rejected
document, and read = written + rejected either way."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from aunet.segment.shards import Manifest
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_arrow, write_jsonl, write_parquet
from segment_fixtures import segment

GOOD = [json.dumps({"text": f"document number {i}"}) for i in range(10)]


def jsonl_with(path: Path, bad_line: str, at: int = 3) -> Path:
    lines = GOOD[:at] + [bad_line] + GOOD[at:]
    path.write_text("\n".join(lines) + "\n")
    return path


def truncated_zst(path: Path) -> Path:
    # Large enough for several zstd blocks, so the part before the cut decodes.
    data = "".join(json.dumps({"text": f"document {i}: " + "words " * (i % 50)}) + "\n" for i in range(20000)).encode()
    blob = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return path


def truncated_gz(path: Path) -> Path:
    blob = gzip.compress("".join(json.dumps({"text": f"document {i}: " + "words " * (i % 50)}) + "\n" for i in range(20000)).encode())
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return path


def corrupt_parquet(path: Path) -> Path:
    write_parquet(path, sample_texts(100))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_arrow(path: Path) -> Path:
    write_arrow(path, sample_texts(100))
    path.write_bytes(b"not arrow at all" + path.read_bytes()[100:])
    return path


def parquet_with_nulls(path: Path) -> Path:
    pq.write_table(pa.table({"text": ["a", None, "b", None]}), path)
    return path


def parquet_int_text(path: Path) -> Path:
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    return path


def unreadable(path: Path) -> Path:
    # Reading our own /proc/self/mem at offset 0 fails with EIO even as root.
    os.symlink("/proc/self/mem", path)
    return path


CASES = {
    "malformed-json": (lambda p: jsonl_with(p / "a.jsonl", '{"text": "unterminated'), "a.jsonl: line 4: malformed JSON", 10, 1),
    "not-an-object": (lambda p: jsonl_with(p / "a.jsonl", '["text"]'), "a.jsonl: line 4: not a JSON object", 10, 1),
    "missing-field": (lambda p: jsonl_with(p / "a.jsonl", '{"body": "x"}'), "a.jsonl: line 4: missing text field", 10, 1),
    "non-string": (lambda p: jsonl_with(p / "a.jsonl", '{"text": 42}'), "a.jsonl: line 4: text field 'text' is int, not a string", 10, 1),
    "invalid-utf8-line": (lambda p: (p / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n') and p / "a.jsonl", "a.jsonl: line 2: malformed JSON", 1, 1),
    "truncated-zst": (lambda p: truncated_zst(p / "a.jsonl.zst"), "a.jsonl.zst: after line", None, 1),
    "truncated-gz": (lambda p: truncated_gz(p / "a.jsonl.gz"), "a.jsonl.gz: after line", None, 1),
    "corrupt-parquet": (lambda p: corrupt_parquet(p / "a.parquet"), "a.parquet: file: corrupt Parquet file", 0, 1),
    "corrupt-arrow": (lambda p: corrupt_arrow(p / "a.arrow"), "a.arrow: file: corrupt Arrow IPC file", 0, 1),
    "null-text": (lambda p: parquet_with_nulls(p / "a.parquet"), "a.parquet: row 1: text column 'text' is null", 2, 2),
    "int-text-column": (lambda p: parquet_int_text(p / "a.parquet"), "a.parquet: rows 0-2: text column 'text' has type int64", 0, 3),
    "unreadable": (lambda p: unreadable(p / "a.jsonl"), "a.jsonl: file: unreadable", 0, 1),
}


def inputs_for(tmp_path: Path, case: str) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    CASES[case][0](inputs)
    return inputs


@pytest.mark.parametrize("case", list(CASES))
def test_fail_mode_names_file_and_location(tmp_path, case):
    where = CASES[case][1]
    inputs = inputs_for(tmp_path, case)
    proc = segment(inputs, "--out", tmp_path / "out", *STRATEGY_ARGS, check=1)
    assert where in proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_skip_mode_records_every_rejected_document(tmp_path, case):
    _, where, written, rejected = CASES[case]
    inputs = inputs_for(tmp_path, case)
    out = tmp_path / "out"
    proc = segment(inputs, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=3)
    m = Manifest.load(out)
    assert m.documents_read == m.documents_written + m.documents_rejected
    assert m.documents_rejected == rejected
    if written is not None:
        assert m.documents_written == written
    else:  # truncated streams: what came before the damage is kept
        assert m.documents_written > 0
    records = [json.loads(line) for f in sorted((out / "rejects").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sum(r["count"] for r in records) == rejected
    assert any(where.split(": ", 1)[1] in f"{r['location']}: {r['reason']}" for r in records)
    assert f"rejected {rejected:,}" in proc.stdout or f"rejected {rejected}" in proc.stdout


def test_bad_arguments_fail_early(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ["x"])
    assert "either --strategy" in segment(tmp_path / "a.jsonl", "--out", tmp_path / "o", check=2).stderr
    assert "unknown strategy kind" in segment(tmp_path / "a.jsonl", "--out", tmp_path / "o", "--strategy", "bpe=1", check=2).stderr
    assert "--rank" in segment(tmp_path / "a.jsonl", "--out", tmp_path / "o", *STRATEGY_ARGS, "--rank", "2", "--world-size", "2", check=2).stderr
    (tmp_path / "notes.txt").write_text("x")
    assert "unsupported input format" in segment(tmp_path / "notes.txt", "--out", tmp_path / "o", *STRATEGY_ARGS, check=2).stderr
