"""aunet-segment against SPEC sections 2, 3 and 8: the strategy list compared in order, manifest
paths confined to their directory, rank manifests of one input list, a linear JSONL line reader
with a cap on a document's size, and `verify --deep` on a corrupted mask."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aunet.data.shard_source import ShardSource
from aunet.segment import BadDocument, ManifestError, merge, segment_corpus, verify
from aunet.segment.readers.lines import split_lines
from aunet.segment.layout import MANIFEST
from aunet.segment.shards import Manifest, file_checksum
from segment_fixtures import STRATEGY, STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import read_shards, segment

FORWARD = {"pretok": "", "word": "2@1"}
REVERSED = {"word": "2@1", "pretok": ""}


def masks(out: Path) -> list[bytes]:
    return [mask for _, mask, _ in read_shards(out)]


# ---------------------------------------------------------------- 1. strategy order


def test_rerun_with_the_strategy_order_swapped_redoes_the_shards(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_texts(60))
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    segment_corpus(src, out, FORWARD)
    first = masks(out)
    rerun = segment_corpus(src, out, REVERSED)
    segment_corpus(src, fresh, REVERSED)
    assert masks(fresh) != first  # the two orders do give different masks
    assert rerun.run.files_processed == 1
    assert masks(out) == masks(fresh)
    assert verify(out, deep=True) == []


def test_manifest_order_swapped_against_the_shards_is_caught(tmp_path):
    out = tmp_path / "out"
    segment_corpus(write_jsonl(tmp_path / "a.jsonl", sample_texts(30)), out, FORWARD)
    raw = json.loads((out / MANIFEST).read_text())
    raw["strategy"] = REVERSED
    (out / MANIFEST).write_text(json.dumps(raw))
    shard = out / raw["shards"][0]["path"]
    assert any(p.startswith(f"{shard}: strategy") for p in verify(out)), verify(out)
    source = ShardSource(out)
    with pytest.raises(ValueError, match="different strategy"):
        source.document(0, 0)


def test_merge_refuses_rank_manifests_of_another_strategy_order(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        write_jsonl(inputs / f"p{i}.jsonl", sample_texts(10, seed=i))
    out = tmp_path / "out"
    segment_corpus(inputs, out, FORWARD, rank=0, world_size=2)
    segment_corpus(inputs, out, REVERSED, rank=1, world_size=2)
    with pytest.raises(ManifestError, match="options differ"):
        merge(out)


# ---------------------------------------------------------------- 2. manifest paths


def _tamper(out: Path, path: str, name: str = MANIFEST) -> None:
    raw = json.loads((out / name).read_text())
    raw["shards"][0]["path"] = path
    (out / name).write_text(json.dumps(raw))


@pytest.fixture
def shard_dir(tmp_path) -> Path:
    out = tmp_path / "out"
    segment_corpus(write_jsonl(tmp_path / "a.jsonl", sample_texts(20)), out, STRATEGY)
    return out


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_manifest_shard_paths_stay_inside_the_directory(shard_dir, tmp_path, kind):
    # A copy of a real shard outside the directory: reading it would "work", which is the danger.
    outside = tmp_path / "elsewhere.arrow"
    outside.write_bytes((shard_dir / Manifest.load(shard_dir).shards[0].path).read_bytes())
    if kind == "absolute":
        bad = str(outside)
    elif kind == "dotdot":
        bad = "../elsewhere.arrow"
    else:
        (shard_dir / "link.arrow").symlink_to(outside)
        bad = "link.arrow"
    _tamper(shard_dir, bad)
    for load in (lambda: Manifest.load(shard_dir), lambda: verify(shard_dir), lambda: ShardSource(shard_dir)):
        with pytest.raises(ManifestError) as e:
            load()
        assert str(shard_dir / MANIFEST) in str(e.value) and bad in str(e.value)
    assert segment("inspect", shard_dir, check=1).stderr.count(bad) == 1


def test_merge_refuses_rank_manifest_with_an_outside_path(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        write_jsonl(inputs / f"p{i}.jsonl", sample_texts(10, seed=i))
    out = tmp_path / "out"
    for rank in range(2):
        segment_corpus(inputs, out, STRATEGY, rank=rank, world_size=2)
    _tamper(out, "../../etc/passwd", "manifest.rank1-of2.json")
    with pytest.raises(ManifestError, match="manifest.rank1-of2.json.*../../etc/passwd"):
        merge(out)


def test_a_symlink_inside_the_directory_is_allowed(shard_dir):
    real = Manifest.load(shard_dir).shards[0].path
    (shard_dir / "alias.arrow").symlink_to(shard_dir / real)
    _tamper(shard_dir, "alias.arrow")
    assert Manifest.load(shard_dir).shards[0].path == "alias.arrow"


def test_merge_refuses_ranks_run_on_different_input_lists(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        write_jsonl(inputs / f"p{i}.jsonl", sample_texts(10, seed=i))
    out = tmp_path / "out"
    segment_corpus(inputs, out, STRATEGY, rank=0, world_size=2)
    # Rank 1 sees one file fewer: its index k names another file than rank 0's index k would.
    segment_corpus(sorted(inputs.glob("*.jsonl"))[1:], out, STRATEGY, rank=1, world_size=2)
    with pytest.raises(ManifestError) as e:
        merge(out)
    assert "manifest.rank0-of2.json" in str(e.value) and "manifest.rank1-of2.json" in str(e.value)
    assert "input" in str(e.value)
    assert not (out / MANIFEST).exists()


def test_merge_accepts_ranks_run_on_the_same_input_list(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        write_jsonl(inputs / f"p{i}.jsonl", sample_texts(10, seed=i))
    out = tmp_path / "out"
    for rank in range(2):
        segment_corpus(inputs, out, STRATEGY, rank=rank, world_size=2)
    assert merge(out).documents_written == 30


# ---------------------------------------------------------------- 3. JSONL lines and the size cap


class CountingBytes(bytes):
    """Chunks that count every byte a `+` on them copies."""

    copied = 0

    def __add__(self, other):
        result = bytes.__add__(self, other)
        CountingBytes.copied += len(result)
        return CountingBytes(result)

    def __radd__(self, other):
        result = bytes(other) + bytes(self)
        CountingBytes.copied += len(result)
        return CountingBytes(result)


def test_lines_spanning_many_chunks_are_read_whole():
    lines = [b"a" * 5000, b"", b"short", bytes(range(1, 10)) * 700, b"x" * 1023, b"y" * 1024, b"tail"]
    data = b"\n".join(lines)  # no final newline: the last line still counts
    for size in (1, 7, 1023, 1024, 4096, len(data)):
        chunks = (data[i : i + size] for i in range(0, len(data), size))
        assert list(split_lines(chunks)) == lines, size


def test_reading_a_long_line_copies_linear_bytes():
    chunk, n = 1024, 400
    CountingBytes.copied = 0
    chunks = [CountingBytes(b"z" * chunk) for _ in range(n)] + [CountingBytes(b"\nend")]
    assert list(split_lines(iter(chunks))) == [b"z" * (chunk * n), b"end"]
    # Re-concatenating the growing tail for each chunk copies about n^2/2 chunks (80 MB here).
    assert CountingBytes.copied <= 2 * chunk * n


def test_an_over_long_line_is_skipped_without_being_held():
    chunk, cap = 1 << 16, 1 << 20
    long_line = 40 * cap

    def chunks():
        yield b"first\n"
        for _ in range(long_line // chunk):
            yield b"q" * chunk
        yield b"\nlast"

    tracemalloc.start()
    try:
        got = [x if isinstance(x, bytes) else ("too long", x.size) for x in split_lines(chunks(), cap)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [b"first", ("too long", long_line), b"last"]
    assert peak < cap + 8 * chunk, peak


def _long_jsonl(path: Path, cap: int) -> Path:
    docs = ["small one", "x" * (cap + 10), "small two", "y" * (cap - 100)]  # the cap counts the whole line
    return write_jsonl(path, docs)


def test_jsonl_document_over_the_cap_is_rejected_with_its_line(tmp_path):
    cap = 4096
    src = _long_jsonl(tmp_path / "a.jsonl", cap)
    out = tmp_path / "out"
    m = segment_corpus(src, out, STRATEGY, on_error="skip", max_document_bytes=cap)
    assert (m.documents_read, m.documents_written, m.documents_rejected) == (4, 3, 1)
    assert [text[:5] for text, _, _ in read_shards(out)] == [b"small", b"small", b"yyyyy"]
    (reject,) = [json.loads(x) for x in (out / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    assert reject["location"] == "line 2" and reject["file"] == str(src) and "too long" in reject["reason"]
    assert list(m.rejected_by_reason) == ["document too long"]
    with pytest.raises(BadDocument, match=f"{src}: line 2: document too long"):
        segment_corpus(src, tmp_path / "fail", STRATEGY, max_document_bytes=cap)
    # The cap decides what is written, so a rerun with another cap redoes the file.
    again = segment_corpus(src, out, STRATEGY, on_error="skip", max_document_bytes=cap * 2)
    assert again.run.files_processed == 1 and again.documents_written == 4


def test_parquet_document_over_the_cap_is_rejected_with_its_row(tmp_path):
    cap = 4096
    src = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["ok", "z" * (cap + 1), "fine", "w" * cap]}), src, row_group_size=2)
    m = segment_corpus(src, tmp_path / "out", STRATEGY, on_error="skip", max_document_bytes=cap)
    assert (m.documents_read, m.documents_written, m.documents_rejected) == (4, 3, 1)
    assert [row for _, _, row in read_shards(tmp_path / "out")] == [0, 2, 3]
    (reject,) = [json.loads(x) for x in (tmp_path / "out" / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    assert reject["location"] == "row 1" and "too long" in reject["reason"]
    with pytest.raises(BadDocument, match=f"{src}: row 1: document too long"):
        segment_corpus(src, tmp_path / "fail", STRATEGY, max_document_bytes=cap)


def test_cli_max_document_bytes(tmp_path):
    src = _long_jsonl(tmp_path / "a.jsonl", 4096)
    proc = segment(src, "--out", tmp_path / "out", *STRATEGY_ARGS, "--max-document-bytes", "4KB", "--on-error", "skip", check=3)
    assert "rejected 1: document too long" in proc.stdout
    proc = segment(src, "--out", tmp_path / "fail", *STRATEGY_ARGS, "--max-document-bytes", "4KB", check=1)
    assert f"{src}: line 2: document too long" in proc.stderr
    segment(src, "--out", tmp_path / "default", *STRATEGY_ARGS)  # 64 MiB by default
    assert segment(src, "--out", tmp_path / "bad", *STRATEGY_ARGS, "--max-document-bytes", "lots", check=2).stderr


# ---------------------------------------------------------------- 4. verify --deep


def test_verify_deep_catches_a_changed_level_that_shallow_checks_cannot(tmp_path):
    out = tmp_path / "out"
    segment_corpus(write_jsonl(tmp_path / "a.jsonl", sample_texts(200)), out, STRATEGY, shard_size="4KB")
    manifest = Manifest.load(out)
    shard_info = manifest.shards[1]
    path = out / shard_info.path
    reader = pa.ipc.open_file(pa.py_buffer(path.read_bytes()))  # not mapped: the file is rewritten below
    schema, batches = reader.schema, [reader.get_batch(b) for b in range(reader.num_record_batches)]
    row = 5
    mask = bytearray(batches[0].column("level_mask")[row].as_py())
    assert len(mask) > 3
    mask[3] = (mask[3] + 1) % (len(STRATEGY) + 1)  # another valid level: sizes and structure unchanged
    masks_col = batches[0].column("level_mask").to_pylist()
    masks_col[row] = bytes(mask)
    columns = batches[0].columns
    columns[1] = pa.array(masks_col, pa.large_binary())
    batches[0] = pa.RecordBatch.from_arrays(columns, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as w:
        for b in batches:
            w.write_batch(b)
    # The manifest is brought up to date, so only recomputing the masks can tell.
    raw = json.loads((out / MANIFEST).read_text())
    raw["shards"][1].update(checksum=file_checksum(path), file_bytes=os.path.getsize(path))
    (out / MANIFEST).write_text(json.dumps(raw))
    assert verify(out) == []
    assert verify(out, deep=True) == [f"{path}: row {row}: mask differs from the strategy's"]
    assert segment("verify", out).returncode == 0
    proc = segment("verify", out, "--deep", check=1)
    assert f"FAIL {path}: row {row}: mask differs" in proc.stdout
