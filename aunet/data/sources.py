"""Where a run's data is: the sources of `data.sources` (or `eval.validation.sources`) as shard
directories, segmenting raw-text sources first (SPEC section 6: by all ranks in parallel).

A source is a path under `data.root_dir`: a shard directory made by aunet-segment (it has a
manifest.json), or raw input (JSONL, .gz/.zst, Parquet, Arrow files or a folder of them) that is
segmented with the config's strategy into <dump_dir>/segmented/<section>/<name> before the
loader opens it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aunet.config import TrainArgs
from aunet.data.contract import check_shards
from aunet.segment import InvalidRequest, expand_inputs, merge, segment_corpus
from aunet.segment.layout import REJECTS_DIR, is_shard_dir

TRAINING = "data.sources"
VALIDATION = "eval.validation.sources"


def source_path(root_dir: str | None, name: str) -> Path:
    """Where source `name` of a config lives: under `data.root_dir` unless absolute."""
    return Path(name) if not root_dir or Path(name).is_absolute() else Path(root_dir) / name


def resolve_sources(cfg: TrainArgs, key: str = TRAINING) -> list[tuple[str, Path, float, list[str] | None]]:
    """Each source of `data.sources` (or `eval.validation.sources`), under data.root_dir, as
    (name, path, weight, raw inputs): raw inputs is None for a shard directory made by
    aunet-segment, else the JSONL/.gz/.zst/Parquet/Arrow files to segment first."""
    sources = cfg.data.sources if key == TRAINING else cfg.eval.validation.sources
    out: list[tuple[str, Path, float, list[str] | None]] = []
    for name, weight in sources.items():
        if weight <= 0:
            continue
        path = source_path(cfg.data.root_dir, name)
        if is_shard_dir(path):
            out.append((name, path, float(weight), None))
            continue
        try:
            raw = expand_inputs([str(path)], raw_cache(cfg, key, name))
        except InvalidRequest as e:
            raise FileNotFoundError(f"{key}.{name}: {path} is neither a shard directory (with manifest.json) nor raw text input: {e}") from None
        out.append((name, path, float(weight), [str(f) for f in raw]))
    if not out and key == TRAINING:
        raise ValueError("data.sources: no source with a positive weight")
    return out


def raw_cache(cfg: TrainArgs, key: str, name: str) -> Path:
    """Where raw-text source `name` is segmented: <dump_dir>/segmented/<key>/<name>."""
    safe = name.strip("/").replace("/", "_") or "source"
    return Path(cfg.dump_dir or f"runs/{cfg.name}") / "segmented" / key.split(".")[0] / safe


def source_paths(cfg: TrainArgs, key: str = TRAINING, rank: int = 0, world_size: int = 1, barrier=None) -> dict[str, float]:
    """Shard directories to read, with their weights. Raw-text sources are segmented first by
    all ranks together (`segment_corpus` with rank/world_size: rank r takes input files
    k = r mod W, resumably, rejects recorded), then rank 0 merges the rank manifests into one,
    between `barrier`s."""
    local = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, len(os.sched_getaffinity(0)) // max(local, 1))  # the node's cores shared by its ranks
    out = {}
    for name, path, weight, raw in resolve_sources(cfg, key):
        if raw is None:
            out[str(path)] = weight
            continue
        cache = raw_cache(cfg, key, name)
        part = segment_corpus(raw, cache, cfg.data.shard_strategy, on_error="skip", rank=rank, world_size=world_size,
                              threads=threads, progress=rank == 0 and sys.stderr.isatty())
        if barrier is not None:
            barrier()
        if rank == 0:
            if world_size > 1:
                m = merge(cache, world_size)  # rank manifests of a run with another world size go
            else:
                m = part
            print(f"{key}.{name}: {m.documents_written:,} documents segmented into {cache} by {world_size} rank(s)"
                  + (f" ({m.documents_rejected:,} rejected, listed in {cache / REJECTS_DIR})" if m.documents_rejected else ""), flush=True)
        if barrier is not None:
            barrier()
        out[str(cache)] = weight
    return out


def check_sources(cfg: TrainArgs, directories: list[str], rank: int) -> None:
    """Refuse shards made with another strategy list or depth than the model's, unless
    `data.allow_shard_mismatch` (then rank 0 reports each difference)."""
    strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
    for problem in check_shards(directories, strategy, cfg.model.n_levels, cfg.data.allow_shard_mismatch,
                                "set data.allow_shard_mismatch=true"):
        if rank == 0:
            print(f"warning (data.allow_shard_mismatch): {problem}", flush=True)
