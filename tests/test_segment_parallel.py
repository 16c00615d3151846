"""One large input file uses every worker's CPUs (a pipeline of threads: decompressing and cutting
lines, parsing, segmenting with several threads, writing), and the output stays a pure function
of the input and the options: the same shards, byte for byte, as one worker on one thread."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import zstandard

from helpers import venv_script
from segment_fixtures import STRATEGY_ARGS, sample_texts

from aunet.segment.readers import read_batches


def large_corpus(path: Path, mb: float, seed: int = 0) -> tuple[Path, int]:
    """A JSONL.zst file of about `mb` MB of text: documents of 0.2-50 KB (log-uniform) cut from
    multilingual text, every 997th line broken JSON. Returns the path and the number of lines."""
    rng = np.random.default_rng(seed)
    base = " ".join(sample_texts(3000, seed))
    lines, size = [], 0
    while size < mb * 1e6:
        n = int(np.exp(rng.uniform(np.log(200), np.log(50_000))))
        start = int(rng.integers(0, len(base) - n)) if n < len(base) else 0
        text = base[start : start + n]
        line = json.dumps({"text": text, "id": len(lines)}, ensure_ascii=False)
        lines.append(line[:-1] if len(lines) % 997 == 500 else line)  # an unterminated object
        size += len(text.encode())
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(("\n".join(lines) + "\n").encode()))
    return path, len(lines)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[Path, int]:
    return large_corpus(tmp_path_factory.mktemp("big") / "big.jsonl.zst", 50)


def run_segment(inp: Path, out: Path, *options: str) -> None:
    proc = subprocess.run([venv_script("aunet-segment"), str(inp), "--out", str(out), "--no-progress", "--on-error", "skip",
                           "--keep-fields", "id", *STRATEGY_ARGS, *options], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]  # 3: done, with rejected documents


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and ".progress" not in p.parts}


@pytest.mark.slow  # 2 s: two segmentation runs of a large file
def test_one_large_file_on_two_workers_equals_one_worker_on_one_thread(tmp_path, big_file):
    path, lines = big_file
    run_segment(path, tmp_path / "serial", "--workers", "1", "--threads", "1")
    run_segment(path, tmp_path / "parallel", "--workers", "2")
    serial, parallel = tree(tmp_path / "serial"), tree(tmp_path / "parallel")
    assert serial.keys() == parallel.keys()
    differing = [k for k in serial if serial[k] != parallel[k] and k != "manifest.json"]
    assert not differing, differing
    a, b = (json.loads(t["manifest.json"]) for t in (serial, parallel))
    assert a["shards"] == b["shards"] and len(a["shards"]) >= 1
    rejected = len(range(500, lines, 997))
    assert (a["documents_read"], a["documents_written"], a["documents_rejected"]) == (lines, lines - rejected, rejected)
    assert (b["documents_read"], b["documents_written"], b["documents_rejected"]) == (a["documents_read"], a["documents_written"], a["documents_rejected"])


def _contents(path: Path, **kw) -> list[tuple[list[int], list[bytes], list[str]]]:
    return [(b.rows.tolist(), b.texts.to_pylist(), [f"{r.location}: {r.reason}" for r in b.rejects])
            for b in read_batches(path, path.name, None, [], **kw)]


def test_batches_depend_on_the_contents_alone(tmp_path, big_file):
    """Batches cut by content: the same whether reading runs in threads ahead or not, and whether
    the bytes come from a plain file (1 MiB reads) or a zstd stream (other chunk sizes)."""
    path, lines = big_file
    plain = tmp_path / "big.jsonl"
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read())
    serial = _contents(path, batch_bytes=3 << 20)
    assert len(serial) >= 10
    assert sum(len(rows) for rows, _, _ in serial) + sum(len(rj) for _, _, rj in serial) == lines
    assert _contents(path, batch_bytes=3 << 20, ahead=2) == serial
    assert _contents(plain, batch_bytes=3 << 20, ahead=1) == serial


def test_parquet_large_row_group_is_cut_into_batches_without_changing_contents(tmp_path):
    import pyarrow.parquet as pq

    texts = [t * 40 for t in sample_texts(4000)]
    path = tmp_path / "one-group.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=len(texts))
    batches = list(read_batches(path, path.name, None, [], batch_bytes=256 << 10))
    assert len(batches) > 3  # one row group, several batches
    assert [r for b in batches for r in b.rows.tolist()] == list(range(len(texts)))
    assert [t for b in batches for t in b.texts.to_pylist()] == [t.encode() for t in texts]
    assert all(b.texts.type == pa.large_binary() for b in batches)
    assert _contents(path, batch_bytes=256 << 10, ahead=2) == _contents(path, batch_bytes=256 << 10)


def test_an_interrupt_stops_every_worker_and_is_raised_and_a_rerun_completes(tmp_path, monkeypatch):
    """Ctrl-C in the calling thread (raised from its progress callback here) stops the other
    worker at its next batch instead of letting it finish its file, is raised as the
    KeyboardInterrupt it is (not replaced by another worker's error), leaves no finished marker
    for an unfinished file, and a rerun ends with the shards of an uninterrupted run."""
    import threading

    from segment_fixtures import STRATEGY

    from aunet import segment_corpus
    from aunet.segment import job
    from aunet.segment.corpus import _options, _run_parallel

    monkeypatch.setattr(job, "BATCH_BYTES", 4096)  # many batches per file: an interrupt lands mid-file
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        # Files 0 and 1 (one per worker, whichever takes which) are long, about 200 batches: the
        # other worker is mid-file at the interrupt and would otherwise run to its end.
        (inputs / f"f{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sample_texts(12000 if i < 2 else 400, seed=i)))
    files = sorted(inputs.iterdir())
    opts = _options(STRATEGY, None, 2, "1GB", "none", "fail", 0, 1, None, [], "64MB")
    out = tmp_path / "out"
    out.mkdir()
    caller = threading.get_ident()
    other_started, interrupting = threading.Event(), threading.Event()

    def progress(docs, text_bytes, input_bytes):
        # The interrupt comes once the other worker is inside its file; that worker is held
        # until then, so that it cannot have finished first (threads are scheduled freely).
        if threading.get_ident() == caller:
            assert other_started.wait(60)
            interrupting.set()
            raise KeyboardInterrupt
        other_started.set()
        assert interrupting.wait(60)

    with pytest.raises(KeyboardInterrupt):
        _run_parallel(out, list(enumerate(files)), opts, 2, progress)
    assert not [t for t in threading.enumerate() if t.name.startswith("aunet-worker-")]
    done = {p.stem for p in (out / ".progress").glob("*.json")} if (out / ".progress").exists() else set()
    assert done == set()
    assert not list(out.glob("part-000002-*"))  # never started

    segment_corpus(inputs, out, STRATEGY, workers=2, progress=False)
    segment_corpus(inputs, tmp_path / "clean", STRATEGY, workers=1, progress=False)
    resumed, clean = tree(out), tree(tmp_path / "clean")
    assert resumed.keys() == clean.keys()
    assert [k for k in clean if clean[k] != resumed[k] and k != "manifest.json"] == []
