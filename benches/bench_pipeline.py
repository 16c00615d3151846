"""End-to-end preprocessing throughput: JSONL.zst or Parquet in, uncompressed Arrow shards out.

Builds a realistic mix on the spot (English prose, Python code from the standard library,
Cyrillic and CJK text; documents of 0.2-50 KB, log-uniform sizes, shuffled), writes it as
several JSONL.zst files, as one JSONL.zst file, and as several Parquet files, and measures in
the same run
- the whole `aunet-segment` command with --workers 2 on each (MB/s of text, wall clock,
  process start-up included),
- the same with every file given three times (copies): the extra wall time is that of the extra
  text alone, the steady-state rate without start-up,
- `Segmenter.levels_batch` on one thread over the same documents (Arrow batches), the
  yardstick: the end-to-end figure divided by it is the ratio docs/benchmarks.md reports,
- where one worker's time goes (decompression, JSON parsing, segmentation, writing; for
  Parquet: reading, segmentation, writing), timing the building blocks the command uses one
  stage at a time on one file,
- a reference-style pipeline (same reading, the `regex`-package oracle segmenting) on a slice
  of the same input, for the ratio.

    .venv/bin/python benches/bench_pipeline.py [--mb 60] [--files 8] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import save  # noqa: E402
from corpora import stdlib_files  # noqa: E402
from oracle import OracleSegmenter  # noqa: E402

from aunet.segment.shard_writer import LocalFiles, ShardWriter  # noqa: E402
from aunet.segment.readers import read_batches  # noqa: E402
from aunet.segment.readers.compression import zstd_chunks  # noqa: E402
from aunet.segment.segmenter import Segmenter  # noqa: E402
from aunet.segment.shards import shard_schema  # noqa: E402

STRATEGY = {"word1": "1@1", "word2": "2@1"}
# Shares of the corpus's text bytes.
MIX = {"english prose": 0.30, "code": 0.25, "cyrillic": 0.25, "cjk": 0.20}
DOC_BYTES = (200, 50_000)  # log-uniform document sizes
# Steady state: the run over every file and COPIES copies of it, less the run over the files
# alone; two copies make the difference twice as long as the noise of either run.
COPIES = 2


# ---------------------------------------------------------------- the corpus


def _zipf_tokens(rng: np.random.Generator, vocab: list[bytes], n: int, sep: bytes, ends: list[bytes], sentence: float) -> bytes:
    """`n` tokens drawn from `vocab` with Zipf-like frequencies; after each one a sentence
    ends with probability 1/`sentence` (with one of `ends`)."""
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    idx = rng.choice(len(vocab), size=n, p=p / p.sum())
    end = np.where(rng.random(n) < 1 / sentence, rng.integers(1, len(ends) + 1, n), 0)
    table = [w + e for e in [b"", *ends] for w in vocab]
    return sep.join([table[i] for i in (end * len(vocab) + idx).tolist()])


def english_prose(limit: int, seed: int) -> bytes:
    """Words of the Python documentation (pydoc's topics), in their frequencies."""
    import re

    import pydoc_data.topics

    counts: dict[str, int] = {}
    for w in re.findall(r"[A-Za-z][a-z']*|[0-9]+", " ".join(pydoc_data.topics.topics.values())):
        counts[w] = counts.get(w, 0) + 1
    vocab = [w.encode() for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])]
    ends = [b".", b",", b".\n", b"?", b":", b".\n\n", b";"]
    return _zipf_tokens(np.random.default_rng(seed), vocab, limit // 6, b" ", ends, 12)[:limit]


CYRILLIC = "оеаинтсрвлкмдпуяыьгзбчйхжшюцщэфъё"
CYRILLIC_FREQ = [10.97, 8.45, 8.01, 7.35, 6.70, 6.26, 5.47, 4.73, 4.54, 4.40, 3.49, 3.21, 2.98, 2.81, 2.62, 2.01, 1.90,
                 1.74, 1.70, 1.65, 1.59, 1.44, 1.21, 0.97, 0.94, 0.73, 0.64, 0.48, 0.36, 0.32, 0.26, 0.04, 0.04]


def cyrillic_text(limit: int, seed: int) -> bytes:
    """Russian-like words (letters in their frequencies, 2-12 letters, some capitalised)."""
    rng = np.random.default_rng(seed)
    p = np.array(CYRILLIC_FREQ) / sum(CYRILLIC_FREQ)
    vocab = []
    for i in range(30_000):
        word = "".join(CYRILLIC[j] for j in rng.choice(len(CYRILLIC), size=int(rng.integers(2, 13)), p=p))
        vocab.append((word.capitalize() if i % 10 == 0 else word).encode())
    ends = [b".", b",", b".\n", b"!", b"?", b" \xe2\x80\x94", b".\n\n"]
    return _zipf_tokens(rng, vocab, limit // 13, b" ", ends, 12)[:limit].rsplit(b" ", 1)[0]


def cjk_text(limit: int, seed: int) -> bytes:
    """Han characters (5,000 of them, Zipf frequencies) with CJK punctuation and digits."""
    rng = np.random.default_rng(seed)
    vocab = [chr(c).encode() for c in rng.choice(np.arange(0x4E00, 0x9FA5), size=5000, replace=False)] + [str(d).encode() for d in range(10)]
    ends = [p.encode() for p in ["。", "，", "、", "！", "？", "。\n", "：", "「", "」"]]
    return _zipf_tokens(rng, vocab, limit // 3, b"", ends, 14)[:limit].rsplit(b"\n", 1)[0]


def python_code(limit: int) -> bytes:
    blobs, total = [], 0
    while total < limit:
        for path in stdlib_files():
            data = path.read_bytes()
            try:
                data.decode()
            except UnicodeDecodeError:
                continue  # a test file in another encoding
            blobs.append(data)
            total += len(data)
            if total >= limit:
                break
    return b"".join(blobs)[:limit].rsplit(b"\n", 1)[0]


def cut_documents(blob: bytes, rng: np.random.Generator) -> list[bytes]:
    """Documents of log-uniform sizes in DOC_BYTES, cut at a newline or space where there is one,
    never inside a character."""
    lo, hi = np.log(DOC_BYTES[0]), np.log(DOC_BYTES[1])
    docs, start = [], 0
    while start < len(blob):
        end = min(len(blob), start + int(np.exp(rng.uniform(lo, hi))))
        if end < len(blob):
            cut = max(blob.rfind(b"\n", start + 100, end), blob.rfind(b" ", start + 100, end))
            if cut > start:
                end = cut + 1
            while end < len(blob) and blob[end] & 0xC0 == 0x80:
                end += 1
        docs.append(blob[start:end])
        start = end
    return docs


def mixed_docs(mb: float, seed: int = 0) -> list[bytes]:
    n = int(mb * 1e6)
    rng = np.random.default_rng(seed)
    parts = {"english prose": english_prose(int(n * MIX["english prose"]), seed + 1), "code": python_code(int(n * MIX["code"])),
             "cyrillic": cyrillic_text(int(n * MIX["cyrillic"]), seed + 2), "cjk": cjk_text(int(n * MIX["cjk"]), seed + 3)}
    docs = [d for blob in parts.values() for d in cut_documents(blob, rng)]
    return [docs[i] for i in rng.permutation(len(docs))]


def write_corpus(root: Path, docs: list[bytes], files: int) -> dict[str, list[Path]]:
    """The documents as `files` JSONL.zst files, as one JSONL.zst file, and as `files` Parquet
    files (zstd-compressed, row groups of 1,000 documents), in the same order."""
    lines = [json.dumps({"text": d.decode(), "id": i}, ensure_ascii=False).encode() + b"\n" for i, d in enumerate(docs)]
    per = (len(docs) + files - 1) // files
    cctx = zstandard.ZstdCompressor(level=3)
    paths: dict[str, list[Path]] = {"jsonl.zst": [], "one jsonl.zst": [], "parquet": []}
    (root / "jsonl").mkdir()
    (root / "one").mkdir()
    (root / "parquet").mkdir()
    for i in range(files):
        part = slice(i * per, (i + 1) * per)
        path = root / "jsonl" / f"corpus-{i:03d}.jsonl.zst"
        path.write_bytes(cctx.compress(b"".join(lines[part])))
        paths["jsonl.zst"].append(path)
        path = root / "parquet" / f"corpus-{i:03d}.parquet"
        pq.write_table(pa.table({"text": pa.array([d.decode() for d in docs[part]], pa.string()), "id": pa.array(range(part.start, part.start + len(docs[part])), pa.int64())}),
                       path, row_group_size=1000, compression="zstd")
        paths["parquet"].append(path)
    path = root / "one" / "corpus.jsonl.zst"
    with open(path, "wb") as f, cctx.stream_writer(f) as w:
        for line in lines:
            w.write(line)
    paths["one jsonl.zst"].append(path)
    return paths


def _write_all(batches, masks, out: Path, name: str) -> float:
    """Seconds to write `batches` with their masks as `aunet-segment` does (one shard per 256 MB)."""
    schema = shard_schema(STRATEGY, name, [])
    writer = ShardWriter(LocalFiles(out), 0, schema, 256 << 20, "none")
    t = time.perf_counter()
    for b, m in zip(batches, masks):
        lengths = pc.binary_length(b.texts).to_numpy(zero_copy_only=False).astype(np.int64)
        writer.write(pa.RecordBatch.from_arrays([b.texts, m, pa.array(b.rows, pa.int64())], schema=schema), lengths)
    writer.close_shard()
    return time.perf_counter() - t


def _read_segment_write(path: Path, out: Path) -> dict[str, float]:
    """Seconds to read `path` into batches, segment them on one thread and write the shards,
    each stage timed alone."""
    t = time.perf_counter()
    batches = list(read_batches(path, path.name, None, []))
    read = time.perf_counter() - t
    seg = Segmenter(STRATEGY)
    t = time.perf_counter()
    masks = [seg.levels_batch(b.texts, threads=1) for b in batches]
    segment = time.perf_counter() - t
    return {"reading": read, "segmentation": segment, "writing": _write_all(batches, masks, out, path.name)}


def stage_times(path: Path, out: Path) -> dict[str, float]:
    """Seconds per stage for one JSONL.zst file on one thread, each stage timed alone."""
    t = time.perf_counter()
    with open(path, "rb") as f:
        for _ in zstd_chunks(f):
            pass
    decompress = time.perf_counter() - t
    times = _read_segment_write(path, out)
    # Reading is decompression, then line splitting and JSON parsing into Arrow batches.
    return {"decompression": decompress, "json_parsing": max(times["reading"] - decompress, 0.0),
            "segmentation": times["segmentation"], "writing": times["writing"]}


def _copy(path: Path, directory: Path, n: int) -> Path:
    directory.mkdir(exist_ok=True)
    target = directory / f"copy{n}-{path.parent.name}-{path.name}"
    shutil.copyfile(path, target)
    return target


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def _best_of(n: int, stages) -> dict[str, float]:
    """Each stage's shortest time over `n` runs of `stages()`."""
    runs = [stages() for _ in range(n)]
    return {k: min(r[k] for r in runs) for k in runs[0]}


def one_thread_levels(docs: list[bytes], batch_bytes: int = 8 << 20) -> float:
    """`Segmenter.levels_batch` MB/s on one thread over `docs`, as Arrow batches of about 8 MB
    (the best of three passes)."""
    batches, start, size = [], 0, 0
    for i, d in enumerate(docs):
        size += len(d)
        if size >= batch_bytes or i == len(docs) - 1:
            batches.append(pa.array(docs[start : i + 1], pa.large_binary()))
            start, size = i + 1, 0
    seg = Segmenter(STRATEGY)
    seg.levels_batch(batches[0], threads=1)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for b in batches:
            seg.levels_batch(b, threads=1)
        best = min(best, time.perf_counter() - t)
    return sum(map(len, docs)) / best / 1e6


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def end_to_end(paths: list[Path], out: Path, workers: int, repeat: int, attempts: int = 5) -> float:
    """Wall-clock seconds of `aunet-segment` on `paths` (process start-up included): the best of
    `repeat` runs. A run during which other processes used more than 5% of the machine is done
    again (up to 5 times): on a shared machine the figure would measure the neighbours."""
    cli = str(Path(sys.executable).parent / "aunet-segment")
    best = float("inf")
    for _ in range(repeat):
        for _attempt in range(attempts):
            shutil.rmtree(out, ignore_errors=True)
            busy, ours = _busy_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([cli, *map(str, paths), "--out", str(out), "--workers", str(workers), "--no-progress",
                            *sum((["--strategy", f"{k}={v}"] for k, v in STRATEGY.items()), [])], check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            foreign = (_busy_cpu_seconds() - busy) - (now.ru_utime + now.ru_stime - ours.ru_utime - ours.ru_stime)
            if foreign < 0.05 * wall * len(os.sched_getaffinity(0)):
                break
            time.sleep(5)
        best = min(best, wall)
    return best


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


def run(mb: float, files: int, workers: int, repeat: int, attempts: int = 5) -> dict:
    docs = mixed_docs(mb)
    text_bytes = sum(map(len, docs))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_corpus(root, docs, files)
        os.sync()  # the corpus on disk, so that no write-back of it runs during the timings
        one_thread = one_thread_levels(docs)
        walls = {kind: end_to_end(ps, root / "out", workers, repeat, attempts) for kind, ps in paths.items()}
        # Steady state: the same files COPIES more times (copies under other names), so that the extra
        # wall time is the time of the extra text alone, without process start-up and imports.
        more = {kind: ps + [_copy(p, root / "copies", n) for n in range(COPIES) for p in ps] for kind, ps in paths.items() if len(ps) > 1}
        extra = {kind: end_to_end(ps, root / "out", workers, repeat, attempts) - walls[kind] for kind, ps in more.items()}
        stages = _best_of(3, lambda: stage_times(paths["jsonl.zst"][0], _fresh(root / "stages")))
        pq_stages = _best_of(3, lambda: _read_segment_write(paths["parquet"][0], _fresh(root / "pq-stages")))
        ref_s, ref_bytes = reference_pipeline(paths["jsonl.zst"][0], 300)
        input_mb = {kind: sum(p.stat().st_size for p in ps) / 1e6 for kind, ps in paths.items()}
    file_bytes = sum(map(len, docs[: (len(docs) + files - 1) // files]))
    ours_1w = file_bytes / sum(stages.values())
    e2e = {kind: text_bytes / wall / 1e6 for kind, wall in walls.items()}
    # None when the noise swamps the difference (tiny --quick corpora).
    steady = {kind: COPIES * text_bytes / t / 1e6 if t > 0.05 * walls[kind] else None for kind, t in extra.items()}
    sizes = np.array([len(d) for d in docs])
    return {
        "workers": workers,
        "files": files,
        "repeat": repeat,
        "documents": len(docs),
        "mix": MIX,
        "document_bytes": {"min": int(sizes.min()), "median": int(np.median(sizes)), "mean": int(sizes.mean()), "max": int(sizes.max())},
        "text_mb": text_bytes / 1e6,
        "input_mb": input_mb,
        "input_mb_zst": input_mb["jsonl.zst"],
        "levels_batch_1_thread_mb_s": one_thread,
        "end_to_end_text_mb_s": e2e["jsonl.zst"],
        "end_to_end_by_input": e2e,
        "end_to_end_wall_s": walls,
        "ratio_end_to_end_to_one_thread": {kind: v / one_thread for kind, v in e2e.items()},
        "steady_state_text_mb_s": steady,
        "ratio_steady_state_to_one_thread": {kind: v / one_thread for kind, v in steady.items() if v is not None},
        "one_worker_text_mb_s_by_stages": ours_1w / 1e6,
        "stage_seconds_one_file": stages,
        "stage_share": {k: v / sum(stages.values()) for k, v in stages.items()},
        "parquet_stage_seconds_one_file": pq_stages,
        "parquet_stage_share": {k: v / sum(pq_stages.values()) for k, v in pq_stages.items()},
        "reference_pipeline_text_mb_s": ref_bytes / ref_s / 1e6,
        "speedup_vs_reference_pipeline_1w": (ours_1w / 1e6) / (ref_bytes / ref_s / 1e6),
        "cpus": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=60.0, help="text megabytes in the corpus")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per input kind (the best counts)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_pipeline.json")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.files, args.repeat = 2.0, 2, 1
    r = run(args.mb, args.files, args.workers, args.repeat, attempts=1 if args.quick else 5)  # --quick: a smoke test, no waiting for a quiet machine
    r["command"] = " ".join(["benches/bench_pipeline.py", *sys.argv[1:]])
    print(f"corpus: {r['text_mb']:.1f} MB of text, {r['documents']:,} documents ({r['document_bytes']['min']:,}-{r['document_bytes']['max']:,} bytes, "
          f"median {r['document_bytes']['median']:,}); {r['files']} JSONL.zst files ({r['input_mb_zst']:.1f} MB), 1 JSONL.zst file, {r['files']} Parquet files")
    print(f"{'measure':<58}{'value':>12}")
    print("-" * 70)
    print(f"{'Segmenter.levels_batch, 1 thread (text MB/s)':<58}{r['levels_batch_1_thread_mb_s']:>12.1f}")
    for kind, v in r["end_to_end_by_input"].items():
        label = f"end to end, {r['workers']} workers, {kind} (text MB/s)"
        print(f"{label:<58}{v:>12.1f}")
        print(f"{'  / levels_batch on 1 thread':<58}{r['ratio_end_to_end_to_one_thread'][kind]:>11.2f}x")
        if r["steady_state_text_mb_s"].get(kind) is not None:
            print(f"{f'  steady state ({COPIES + 1}x the files, extra time) (MB/s)':<58}{r['steady_state_text_mb_s'][kind]:>12.1f}")
            print(f"{'    / levels_batch on 1 thread':<58}{r['ratio_steady_state_to_one_thread'][kind]:>11.2f}x")
    print(f"{'one worker, sum of stages (text MB/s)':<58}{r['one_worker_text_mb_s_by_stages']:>12.1f}")
    print(f"{'reference-style pipeline, oracle (MB/s)':<58}{r['reference_pipeline_text_mb_s']:>12.2f}")
    print(f"{'one worker vs reference pipeline':<58}{r['speedup_vs_reference_pipeline_1w']:>11.0f}x")
    for stage, share in r["stage_share"].items():
        print(f"{'  JSONL.zst share of time: ' + stage:<58}{share:>11.0%}")
    for stage, share in r["parquet_stage_share"].items():
        print(f"{'  Parquet share of time: ' + stage:<58}{share:>11.0%}")
    save(args.out, r)


if __name__ == "__main__":
    main()
