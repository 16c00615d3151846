"""End-to-end preprocessing throughput: JSONL.zst in, uncompressed Arrow shards out.

Builds a corpus on the spot (Python standard library sources + synthetic multilingual text),
writes it as several JSONL.zst files, and measures
- the whole `aunet-segment` command with --workers 2 (MB/s of text, wall clock),
- where one worker's time goes (decompression, JSON parsing, segmentation, writing), timing
  the same building blocks the command uses, one stage at a time,
- a reference-style pipeline (same reading, the `regex`-package oracle segmenting) on a slice
  of the same input, for the ratio.

    .venv/bin/python benches/bench_pipeline.py [--mb 60] [--files 8] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import save  # noqa: E402
from corpora import multilingual_docs, stdlib_docs  # noqa: E402
from oracle import OracleSegmenter  # noqa: E402

from aunet.segment.shard_writer import LocalFiles, ShardWriter  # noqa: E402
from aunet.segment.readers import _lines, _zstd_chunks, read_batches  # noqa: E402
from aunet.segment.segmenter import Segmenter  # noqa: E402
from aunet.segment.shards import shard_schema  # noqa: E402

STRATEGY = {"word1": "1@1", "word2": "2@1"}


def write_corpus(root: Path, mb: float, files: int) -> tuple[list[Path], int]:
    docs = stdlib_docs(int(mb * 1e6 / 2)) + multilingual_docs(int(mb * 1e6 / 2))
    text_bytes = sum(map(len, docs))
    paths = []
    per = (len(docs) + files - 1) // files
    for i in range(files):
        lines = "".join(json.dumps({"text": d.decode("utf-8", "replace"), "id": i * per + j}) + "\n" for j, d in enumerate(docs[i * per : (i + 1) * per]))
        path = root / f"corpus-{i:03d}.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines.encode()))
        paths.append(path)
    return paths, text_bytes


def stage_times(path: Path, out: Path) -> dict[str, float]:
    """Seconds per stage for one file on one thread, each stage timed alone."""
    t = time.perf_counter()
    with open(path, "rb") as f:
        for _ in _zstd_chunks(f):
            pass
    decompress = time.perf_counter() - t

    t = time.perf_counter()
    with open(path, "rb") as f:
        for _ in _lines(_zstd_chunks(f)):
            pass
    split = time.perf_counter() - t

    t = time.perf_counter()
    batches = list(read_batches(path, path.name, None, []))
    read = time.perf_counter() - t

    seg = Segmenter(STRATEGY)
    t = time.perf_counter()
    masks = [seg.levels_batch(b.texts, threads=1) for b in batches]
    segment = time.perf_counter() - t

    schema = shard_schema(STRATEGY, path.name, [])
    writer = ShardWriter(LocalFiles(out), 0, schema, 256 << 20, "none")
    import numpy as np
    import pyarrow.compute as pc

    t = time.perf_counter()
    for b, m in zip(batches, masks):
        lengths = pc.binary_length(b.texts).to_numpy(zero_copy_only=False).astype(np.int64)
        writer.write(pa.RecordBatch.from_arrays([b.texts, m, pa.array(b.rows, pa.int64())], schema=schema), lengths)
    writer.close_shard()
    write = time.perf_counter() - t
    # Line splitting rides with decompression in the reader; JSON parsing is the rest of it.
    return {"decompression": split, "json_parsing": max(read - split, 0.0), "segmentation": segment, "writing": write, "decompression_alone": decompress}


def reference_pipeline(path: Path, limit_docs: int) -> tuple[float, int]:
    """Same reading, the oracle segmenting, masks collected (no writing): seconds, text bytes."""
    oracle = OracleSegmenter(STRATEGY)
    t = time.perf_counter()
    n = size = 0
    for b in read_batches(path, path.name, None, []):
        for text in b.texts.to_pylist():
            oracle.levels(text)
            size += len(text)
            n += 1
            if n >= limit_docs:
                return time.perf_counter() - t, size
    return time.perf_counter() - t, size


def run(mb: float, files: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, text_bytes = write_corpus(root, mb, files)
        input_bytes = sum(p.stat().st_size for p in paths)
        cli = str(Path(sys.executable).parent / "aunet-segment")
        t = time.perf_counter()
        subprocess.run([cli, *map(str, paths), "--out", str(root / "out"), "--workers", str(workers), "--no-progress",
                        *sum((["--strategy", f"{k}={v}"] for k, v in STRATEGY.items()), [])], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        (root / "stages").mkdir()
        stages = stage_times(paths[0], root / "stages")
        ref_s, ref_bytes = reference_pipeline(paths[0], 300)
    total = sum(v for k, v in stages.items() if k != "decompression_alone")
    ours_1w = (text_bytes / files) / total
    return {
        "workers": workers,
        "files": files,
        "text_mb": text_bytes / 1e6,
        "input_mb_zst": input_bytes / 1e6,
        "end_to_end_text_mb_s": text_bytes / wall / 1e6,
        "end_to_end_wall_s": wall,
        "one_worker_text_mb_s_by_stages": ours_1w / 1e6,
        "stage_seconds_one_file": stages,
        "stage_share": {k: v / total for k, v in stages.items() if k != "decompression_alone"},
        "reference_pipeline_text_mb_s": ref_bytes / ref_s / 1e6,
        "speedup_vs_reference_pipeline_1w": (ours_1w / 1e6) / (ref_bytes / ref_s / 1e6),
        "cpus": len(os.sched_getaffinity(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=60.0, help="text megabytes in the corpus")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_pipeline.json")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.files = 2.0, 2
    r = run(args.mb, args.files, args.workers)
    r["command"] = " ".join(["benches/bench_pipeline.py", *sys.argv[1:]])
    print(f"corpus: {r['text_mb']:.1f} MB of text in {r['files']} JSONL.zst files ({r['input_mb_zst']:.1f} MB compressed)")
    print(f"{'measure':<44}{'value':>12}")
    print("-" * 56)
    print(f"{'end to end, ' + str(r['workers']) + ' workers (text MB/s)':<44}{r['end_to_end_text_mb_s']:>12.1f}")
    print(f"{'one worker, sum of stages (text MB/s)':<44}{r['one_worker_text_mb_s_by_stages']:>12.1f}")
    print(f"{'reference-style pipeline, oracle (MB/s)':<44}{r['reference_pipeline_text_mb_s']:>12.2f}")
    print(f"{'one worker vs reference pipeline':<44}{r['speedup_vs_reference_pipeline_1w']:>11.0f}x")
    for stage, share in r["stage_share"].items():
        print(f"{'  share of time: ' + stage:<44}{share:>11.0%}")
    save(args.out, r)


if __name__ == "__main__":
    main()
