"""Input corpora written by the tests, in every format aunet-segment reads."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from helpers import venv_script

STRATEGY_ARGS = ["--strategy", "word1=1@1", "--strategy", "word2=2@1"]
STRATEGY = {"word1": "1@1", "word2": "2@1"}
CLI = venv_script("aunet-segment")


def segment(*args, check: int | None = 0) -> subprocess.CompletedProcess:
    """Run aunet-segment with `args`; asserts its exit status is `check` unless that is None."""
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def read_shards(out: Path) -> list[tuple[bytes, bytes, int]]:
    """(text, level mask, row) of every row of the shards under `out`, in manifest order."""
    from aunet.segment.shards import Manifest, open_shard

    rows = []
    for shard in Manifest.load(out).shards:
        table = open_shard(out / shard.path).read_all()
        rows += zip(table.column("text").to_pylist(), table.column("level_mask").to_pylist(), table.column("row").to_pylist())
    return rows


def sample_texts(n: int, seed: int = 0) -> list[str]:
    words = ["The", "cat", "sat", "on", "the", "mat", "Привет", "мир", "日本語", "🙂", "naïve", "12345", "—", "\n", "  "]
    out = []
    for i in range(n):
        k = (i * 7 + seed) % 23
        out.append(" ".join(words[(i + j * 3 + seed) % len(words)] for j in range(k)) + ("" if i % 11 == 0 else f" doc {i}."))
    out[3] = ""  # an empty document
    return out


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    lines = "".join(json.dumps({field: t, "id": i, "url": f"https://example.org/{i}"}) + "\n" for i, t in enumerate(texts))
    data = lines.encode()
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def write_parquet(path: Path, texts: list[str]) -> Path:
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), path, row_group_size=50)
    return path


def write_arrow(path: Path, texts: list[str], stream: bool = False) -> Path:
    table = pa.table({"content": pa.array([t.encode() for t in texts], pa.binary())})
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=64):
                w.write_batch(batch)
    return path


def read_all(directory: Path, verify: bool = False) -> int:
    """Every batch of one pass over the directory's documents (the loader, one rank); returns
    the tokens the pass covers."""
    from aunet.config import DataArgs
    from aunet.data import PackedLoader, ShardSource

    src = ShardSource(directory, verify)
    loader = PackedLoader(DataArgs(sources={str(directory): 1.0}, seq_len=256, batch_size=4, load_async=False, shuffle_buffer=1,
                                   verify_shards=verify))
    tokens = sum(src.length(u, r) + 2 for u in range(src.units) for r in range(src.unit_rows[u]))
    for _ in range(tokens // (256 * 4) + 2):
        next(loader)
    return tokens
