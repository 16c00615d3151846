"""aunet-segment: formats, shards, manifest, resume, ranks, verify and inspect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aunet import Segmenter
from aunet.segment.shards import Manifest, open_shard
from segment_fixtures import STRATEGY, STRATEGY_ARGS, read_shards, sample_texts, segment, write_arrow, write_jsonl, write_parquet



@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow", "arrow-stream"])
def test_round_trip_every_format(tmp_path, fmt):
    texts = sample_texts(300)
    src = tmp_path / f"in.{fmt.replace('-stream', '')}"
    if fmt.startswith("jsonl"):
        write_jsonl(src, texts)
    elif fmt == "parquet":
        write_parquet(src, texts)
    else:
        write_arrow(src, texts, stream=fmt == "arrow-stream")
    out = tmp_path / "out"
    segment(src, "--out", out, *STRATEGY_ARGS, "--shard-size", "4KB")
    rows = read_shards(out)
    seg = Segmenter(STRATEGY)
    assert [r[0] for r in rows] == [t.encode() for t in texts]
    assert all(mask == seg.levels(text).tobytes() for text, mask, _ in rows)
    first_row = 1 if fmt.startswith("jsonl") else 0  # JSONL lines count from 1, rows from 0
    assert [r[2] for r in rows] == list(range(first_row, first_row + len(texts)))
    manifest = Manifest.load(out)
    assert len(manifest.shards) > 1
    assert manifest.documents_read == manifest.documents_written == len(texts)
    assert sum(s.text_bytes for s in manifest.shards) == sum(len(t.encode()) for t in texts)
    assert manifest.strategy == STRATEGY
    meta = open_shard(out / manifest.shards[0].path).schema.metadata
    assert json.loads(meta[b"aunet.strategy"]) == STRATEGY and meta[b"aunet.version"]


def test_shards_memory_map_without_copy(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(50))
    segment(tmp_path / "a.jsonl", "--out", tmp_path / "out", *STRATEGY_ARGS)
    shard = tmp_path / "out" / Manifest.load(tmp_path / "out").shards[0].path
    import pyarrow as pa

    before = pa.total_allocated_bytes()
    table = open_shard(shard).read_all()
    assert table.num_rows == 50
    assert pa.total_allocated_bytes() == before  # the columns point into the mapped file


def test_carried_fields_and_config_strategy(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(20))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  regex:\n    strategy:\n      word1: 1@1\n      word2: 2@1\nprofiling: {run: false}\n")
    segment(tmp_path / "a.jsonl", "--out", tmp_path / "out", "--config", cfg, "--keep-fields", "id,url")
    table = open_shard(tmp_path / "out" / Manifest.load(tmp_path / "out").shards[0].path).read_all()
    assert table.column("url").to_pylist()[:2] == ["https://example.org/0", "https://example.org/1"]
    assert table.column("id").to_pylist()[:2] == ["0", "1"]
    assert Manifest.load(tmp_path / "out").strategy == STRATEGY


def test_rerun_skips_finished_files_and_changes_nothing(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"in{i}.jsonl", sample_texts(100, seed=i))
    out = tmp_path / "out"
    segment(tmp_path, "--out", out, *STRATEGY_ARGS, "--shard-size", "2KB")
    first = (out / "manifest.json").read_bytes()
    again = segment(tmp_path / "in*.jsonl", "--out", out, *STRATEGY_ARGS, "--shard-size", "2KB")
    assert "0 processed now, 3 already done" in again.stdout
    assert (out / "manifest.json").read_bytes() == first
    # Other options change the output: the files are redone.
    redo = segment(tmp_path, "--out", out, *STRATEGY_ARGS, "--shard-size", "3KB")
    assert "3 processed now" in redo.stdout


def test_rank_split_is_disjoint_complete_and_merges_to_the_single_run(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(7):
        write_jsonl(inputs / f"part{i}.jsonl", sample_texts(40, seed=i))
    single, split = tmp_path / "single", tmp_path / "split"
    segment(inputs, "--out", single, *STRATEGY_ARGS)
    seen = []
    for rank in range(3):
        segment(inputs, "--out", split, *STRATEGY_ARGS, "--rank", rank, "--world-size", 3)
        part = json.loads((split / f"manifest.rank{rank}-of3.json").read_text())
        seen += [i["index"] for i in part["inputs"]]
    assert sorted(seen) == list(range(7)) and len(set(seen)) == 7
    merge_fail = segment("merge", tmp_path / "single", check=None)
    assert merge_fail.returncode == 1
    segment("merge", split)
    a, b = Manifest.load(single), Manifest.load(split)
    assert [(s.path, s.checksum) for s in a.shards] == [(s.path, s.checksum) for s in b.shards]
    assert b.documents_written == a.documents_written == 7 * 40


def test_parallel_workers_give_identical_shards(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        write_jsonl(inputs / f"in{i}.jsonl.zst", sample_texts(120, seed=i))
    segment(inputs, "--out", tmp_path / "one", *STRATEGY_ARGS, "--shard-size", "3KB")
    segment(inputs, "--out", tmp_path / "two", *STRATEGY_ARGS, "--shard-size", "3KB", "--workers", 2)
    a, b = Manifest.load(tmp_path / "one"), Manifest.load(tmp_path / "two")
    assert [(s.path, s.checksum) for s in a.shards] == [(s.path, s.checksum) for s in b.shards]


def test_empty_inputs_and_documents(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    write_jsonl(tmp_path / "blank-docs.jsonl", ["", "", "x"])
    out = tmp_path / "out"
    segment(tmp_path, "--out", out, *STRATEGY_ARGS)
    m = Manifest.load(out)
    assert m.documents_read == m.documents_written == 3
    assert [r[0] for r in read_shards(out)] == [b"", b"", b"x"]
    nothing = segment(tmp_path / "nothing-*.jsonl", "--out", out, *STRATEGY_ARGS, check=2)
    assert "nothing-*.jsonl" in nothing.stderr


def test_verify_catches_flipped_byte_and_truncation(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(200))
    out = tmp_path / "out"
    segment(tmp_path / "a.jsonl", "--out", out, *STRATEGY_ARGS, "--shard-size", "4KB")
    assert "OK" in segment("verify", out, "--deep").stdout
    shards = Manifest.load(out).shards
    first, second = out / shards[0].path, out / shards[1].path
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x01
    first.write_bytes(bytes(data))
    second.write_bytes(second.read_bytes()[:-100])
    proc = segment("verify", out, check=1)
    assert f"{first}: checksum mismatch" in proc.stdout
    assert f"{second}:" in proc.stdout and "truncated" in proc.stdout


def test_inspect_marks_segment_boundaries(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ["The cat sat on the mat. "])
    segment(tmp_path / "a.jsonl", "--out", tmp_path / "out", *STRATEGY_ARGS)
    text = segment("inspect", tmp_path / "out").stdout
    # A marker follows each pooled byte: the segment is everything up to and including it.
    assert "stage 1: The |cat |sat |on |the |mat.| |" in text
    assert "stage 2: The cat |sat on |the mat.| |" in text
