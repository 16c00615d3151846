"""AU-Net preprocessing on datatrove (real LocalPipelineExecutor, real readers, real fsspec
filesystems): every document once, masks equal to the segmenter's, a directory `verify` and the
loader accept, reruns that skip completed tasks, and a SIGKILLed task redone byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from aunet import Manifest, Segmenter
from aunet.config import DataArgs
from aunet.data import PackedLoader, ShardSource
from aunet.segment import ManifestError, merge, verify
from helpers import REPO_ROOT
from segment_fixtures import STRATEGY, sample_texts, write_jsonl, write_parquet

# Slow tier: datatrove pipelines with worker processes, 12 s in all (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow

SCRIPT = REPO_ROOT / "tests" / "scripts" / "datatrove_pipeline.py"
TEXTS = [t for t in sample_texts(600) if t]  # datatrove's readers drop documents without text


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("datatrove-in")
    (root / "jsonl").mkdir()
    (root / "parquet").mkdir()
    for i in range(5):  # 5 files for 4 tasks: one task reads two, and the split is datatrove's
        part = TEXTS[i::5]
        write_jsonl(root / "jsonl" / f"part{i}.jsonl.zst", part)
        write_parquet(root / "parquet" / f"part{i}.parquet", part)
    return root


def pipeline(inputs, fmt, out, logs, *extra, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(inputs), "--format", fmt, "--out", str(out), "--logs", str(logs), *extra],
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def shard_rows(out) -> list[tuple[bytes, bytes]]:
    src = ShardSource(out)
    return [tuple(bytes(a) for a in src.document(u, r)) for u in range(src.units) for r in range(src.unit_rows[u])]


def files_of(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_four_tasks_on_two_workers_write_every_document_once(corpora, tmp_path, fmt):
    out = tmp_path / "shards"
    pipeline(corpora / fmt, fmt, out, tmp_path / "logs")
    assert (out / "manifest.json").is_file()  # merged by the last task to finish
    manifest = Manifest.load(out)
    assert manifest.world_size == 4 and manifest.ranks == [0, 1, 2, 3]
    assert len(manifest.shards) > 4  # 2 KB shards: several per task
    rows = shard_rows(out)
    assert Counter(t for t, _ in rows) == Counter(t.encode() for t in TEXTS)  # each document exactly once
    seg = Segmenter(STRATEGY)
    assert all(m == seg.levels(t).tobytes() for t, m in rows)
    assert manifest.documents_read == manifest.documents_written == len(TEXTS)
    assert verify(out, deep=True) == []
    loader = PackedLoader(DataArgs(sources={str(out): 1.0}, seq_len=64, batch_size=2, load_async=False))
    assert next(loader)["tokens"].shape == (2, 64)
    loader.close()

    before = files_of(out)
    proc = pipeline(corpora / fmt, fmt, out, tmp_path / "logs")  # a rerun: every task is complete
    assert "all 4 tasks have already been completed" in proc.stderr, proc.stderr[-2000:]
    assert files_of(out) == before


def test_a_task_killed_mid_write_is_redone_to_the_same_bytes(corpora, tmp_path):
    clean = tmp_path / "clean"
    pipeline(corpora / "jsonl", "jsonl", clean, tmp_path / "clean-logs", "--workers", "1")
    out, logs, marker = tmp_path / "shards", tmp_path / "logs", tmp_path / "killed"
    proc = pipeline(corpora / "jsonl", "jsonl", out, logs, "--workers", "1", "--kill-at", "2", "40", str(marker), check=False)
    assert proc.returncode == -9 and marker.exists()
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"]
    assert any(p.name.startswith("part-000002-") for p in out.iterdir())  # task 2 had written shards
    assert not (out / "manifest.json").exists()
    proc = pipeline(corpora / "jsonl", "jsonl", out, logs, "--workers", "1", "--kill-at", "2", "40", str(marker))
    assert "Skipping 2 already completed tasks" in proc.stderr, proc.stderr[-2000:]
    assert files_of(out) == files_of(clean)


def test_rejected_documents_are_counted_with_their_source(corpora, tmp_path):
    out = tmp_path / "shards"
    longest = max(len(t.encode()) for t in TEXTS)
    too_long = [t for t in TEXTS if len(t.encode()) > longest - 20]
    pipeline(corpora / "jsonl", "jsonl", out, tmp_path / "logs", "--max-document-bytes", str(longest - 20), "--on-error", "skip")
    manifest = Manifest.load(out)
    assert manifest.documents_rejected == len(too_long) and manifest.documents_written == len(TEXTS) - len(too_long)
    assert manifest.documents_read == len(TEXTS)
    rejects = [json.loads(line) for p in sorted((out / "rejects").iterdir()) for line in p.read_text().splitlines()]
    assert len(rejects) == len(too_long)
    assert all(".jsonl.zst" in r["file"] and "exceeds max_document_bytes" in r["reason"] for r in rejects)
    assert verify(out) == []
    proc = pipeline(corpora / "jsonl", "jsonl", tmp_path / "fail", tmp_path / "fail-logs", "--max-document-bytes",
                    str(longest - 20), check=False)
    assert proc.returncode != 0 and "exceeds max_document_bytes" in proc.stderr


def test_merge_by_hand_gives_the_same_manifest(corpora, tmp_path):
    out = tmp_path / "shards"
    pipeline(corpora / "parquet", "parquet", out, tmp_path / "logs")
    merged = (out / "manifest.json").read_bytes()
    (out / "manifest.json").unlink()
    merge(out)
    assert (out / "manifest.json").read_bytes() == merged
    (out / "manifest.rank3-of4.json").unlink()
    with pytest.raises(ManifestError, match=r"ranks \[3\] of 4"):
        merge(out)


def test_an_in_memory_filesystem_works_like_a_local_folder(tmp_path):
    """Output through fsspec: the same steps, in this process, into `memory://`."""
    import fsspec
    from datatrove.data import Document
    from datatrove.io import get_datafolder

    from aunet.segment.datatrove import AUNetSegment, AUNetShardWriter

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(TEXTS[:200])]
    segment = AUNetSegment(STRATEGY, batch_size=32)
    for rank in range(2):
        writer = AUNetShardWriter("memory://aunet-test/shards", shard_size="8KB", keep_fields=["id"])
        mine = docs[rank::2]
        passed = list(writer.run(segment.run(iter(mine), rank, 2), rank, 2))
        assert len(passed) == len(mine)  # a writer passes documents on, as datatrove's do
    memory = get_datafolder("memory://aunet-test/shards")
    assert memory.isfile("manifest.json")
    local = tmp_path / "copy"
    fsspec.filesystem("memory").get("/aunet-test/shards", str(local), recursive=True)
    assert verify(local, deep=True) == []
    rows = shard_rows(local)
    assert sorted(t for t, _ in rows) == sorted(d.text.encode() for d in docs)
    src = ShardSource(local)
    assert src.manifest.extra_fields == ["id"]


def test_kept_metadata_of_any_type_is_kept_or_rejected_naming_the_field(tmp_path):
    """Bytes and sets in kept metadata (datatrove readers and user steps put them there)."""
    from datatrove.data import Document

    from aunet.segment.datatrove import AUNetSegment, AUNetShardWriter

    metas = [{"src": b"web", "tags": {"b", "a"}}, {"src": b"\xff\xfe", "tags": set()},
             {"src": "plain", "tags": frozenset({3, 1})}, {"src": None, "tags": {"when": b"today"}}]
    docs = [Document(text=f"document number {i}", id=str(i), metadata=m) for i, m in enumerate(metas)]
    out = tmp_path / "shards"
    writer = AUNetShardWriter(str(out), keep_fields=["id", "src", "tags"])
    list(writer.run(AUNetSegment(STRATEGY).run(iter(docs), 0, 1), 0, 1))
    m = Manifest.load(out)
    assert (m.documents_read, m.documents_written, m.documents_rejected) == (4, 3, 1)
    import pyarrow as pa

    table = pa.ipc.open_file(str(out / m.shards[0].path)).read_all()
    assert table.column("id").to_pylist() == ["0", "2", "3"]
    assert table.column("src").to_pylist() == ["web", "plain", None]
    assert table.column("tags").to_pylist() == ['["a", "b"]', "[1, 3]", '{"when": "today"}']
    (reject,) = [json.loads(line) for line in (out / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    assert reject["reason"].startswith("kept field 'src' is not valid UTF-8") and "id 1" in reject["file"]
    assert verify(out) == []


def test_a_run_whose_every_task_is_empty_succeeds_when_the_writer_knows_the_strategy(tmp_path):
    from aunet.segment.datatrove import AUNetSegment, AUNetShardWriter

    out = tmp_path / "shards"
    for rank in range(2):
        writer = AUNetShardWriter(str(out), keep_fields=["id"], strategy=STRATEGY)
        assert list(writer.run(AUNetSegment(STRATEGY).run(iter([]), rank, 2), rank, 2)) == []
    m = Manifest.load(out)
    assert (m.documents_read, len(m.shards)) == (0, 0) and verify(out) == []
    # Without it, the merge cannot know the list, and says so.
    bare = tmp_path / "bare"
    for rank in range(2):
        writer = AUNetShardWriter(str(bare), keep_fields=["id"])
        if rank == 0:
            list(writer.run(iter([]), rank, 2))
        else:
            with pytest.raises(ManifestError, match="no rank wrote a document"):
                list(writer.run(iter([]), rank, 2))
