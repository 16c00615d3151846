"""Packed-batch throughput of the training loader from uncompressed shards, per rank.

Target: at least 50x what the paper's AU-Net-2 consumes per H100 (about 225 KB/s per GPU),
i.e. about 11 MB/s per rank. Side by side: a naive loader that packs with Python lists from
`to_pylist()` rows, on the same shards.

    .venv/bin/python benches/bench_loader.py [--mb 30] [--seq-len 8192] [--batch 12] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import save  # noqa: E402
from corpora import multilingual_docs, stdlib_docs  # noqa: E402

from aunet.config import DataArgs  # noqa: E402
from aunet.data import PackedLoader  # noqa: E402
from aunet.segment.shards import Manifest, open_shard  # noqa: E402

PAPER_BYTES_PER_S_PER_GPU = 225e3


def build_shards(root: Path, mb: float) -> Path:
    docs = stdlib_docs(int(mb * 1e6 / 2)) + multilingual_docs(int(mb * 1e6 / 2))
    src = root / "corpus.jsonl"
    src.write_text("".join(json.dumps({"text": d.decode("utf-8", "replace")}) + "\n" for d in docs))
    cli = str(Path(sys.executable).parent / "aunet-segment")
    subprocess.run([cli, str(src), "--out", str(root / "shards"), "--strategy", "word1=1@1", "--shard-size", "16MB", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return root / "shards"


def ours(shards: Path, seq_len: int, batch: int, seconds: float) -> float:
    loader = PackedLoader(DataArgs(sources={str(shards): 1.0}, seq_len=seq_len, batch_size=batch, prefetch_size=4, shuffle_buffer=1024))
    next(loader)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        next(loader)
        n += 1
    elapsed = time.perf_counter() - t
    loader.close()
    return n * batch * seq_len / elapsed


def naive(shards: Path, seq_len: int, batch: int, seconds: float) -> float:
    """Rows to Python lists, packed by list slicing: how a quick script would do it."""
    n, t, buf = 0, time.perf_counter(), []
    for shard in Manifest.load(shards).shards:
        table = open_shard(shards / shard.path).read_all()
        for text, mask in zip(table.column("text").to_pylist(), table.column("level_mask").to_pylist()):
            buf += [256, *text, 257]
            _ = [1, *mask, 0]
            while len(buf) >= batch * (seq_len + 1):
                rows = [buf[i * seq_len : i * seq_len + seq_len + 1] for i in range(batch)]
                buf = buf[batch * seq_len :]
                n += len(rows)
            if time.perf_counter() - t > seconds:
                return n * seq_len / (time.perf_counter() - t)
    return n * seq_len / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=30.0)
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_loader.json")
    args = p.parse_args()
    if args.quick:
        args.mb, args.seconds, args.seq_len, args.batch = 1.0, 0.5, 1024, 4
    with tempfile.TemporaryDirectory() as tmp:
        shards = build_shards(Path(tmp), args.mb)
        fast = ours(shards, args.seq_len, args.batch, args.seconds)
        slow = naive(shards, args.seq_len, args.batch, args.seconds)
    result = {
        "seq_len": args.seq_len,
        "batch": args.batch,
        "ours_bytes_per_s": fast,
        "naive_bytes_per_s": slow,
        "speedup_vs_naive": fast / slow,
        "x_paper_consumption_per_gpu": fast / PAPER_BYTES_PER_S_PER_GPU,
        "command": " ".join(["benches/bench_loader.py", *sys.argv[1:]]),
    }
    print(f"{'loader':<28}{'MB/s per rank':>14}{'x AU-Net-2 need':>17}")
    print("-" * 59)
    print(f"{'ours (prefetch 4)':<28}{fast / 1e6:>14.1f}{fast / PAPER_BYTES_PER_S_PER_GPU:>16.0f}x")
    print(f"{'naive Python packing':<28}{slow / 1e6:>14.1f}{slow / PAPER_BYTES_PER_S_PER_GPU:>16.0f}x")
    print(f"ours / naive: {fast / slow:.1f}x")
    save(args.out, result)


if __name__ == "__main__":
    main()
