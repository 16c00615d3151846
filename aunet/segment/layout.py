"""The layout of a shard directory (SPEC section 3): every name that `aunet-segment`, the
datatrove writer, `merge`, `verify` and the resume logic write or look for.

    manifest.json                  the directory's manifest, written last and atomically
    manifest.rank{R}-of{W}.json    rank R's manifest in a run over W ranks, until `merge`
    part-{k:06d}-{j:04d}.arrow     shard j of input file k (of datatrove task k)
    part-{k:06d}-{j:04d}.g{g}.arrow  the same, written by a rerun while generation 0 of input k
                                   is still listed (its old shards go once the new manifest is out)
    rejects/part-{k:06d}.jsonl     the documents of input k that were rejected, with reasons
    .progress/{k:06d}.json         input k is done: its shards and checksums (the resume marker)

Names are relative to the directory (a local path or a datatrove `DataFolder`), so both
writers ask the same functions.
"""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST = "manifest.json"
REJECTS_DIR = "rejects"
PROGRESS_DIR = ".progress"
#: Every shard of the directory, and every rank manifest.
SHARD_GLOB = "part-*.arrow"
RANK_MANIFEST_GLOB = "manifest.rank*-of*.json"


def is_shard_dir(path) -> bool:
    """A finished shard directory (local path): one whose manifest has been written."""
    return (Path(path) / MANIFEST).is_file()


def shard_name(index: int, part: int, generation: int = 0) -> str:
    """Shard `part` of input `index`. A rerun that redoes an input whose shards a manifest still
    lists writes them under another `generation`, so that the old ones stay whole until the
    new manifest replaces the old one (SPEC section 8: published before anything is removed)."""
    suffix = f".g{generation}" if generation else ""
    return f"part-{index:06d}-{part:04d}{suffix}.arrow"


_GENERATION = re.compile(r"\.g(\d+)\.arrow$")


def shard_generation(name: str) -> int:
    """The generation of a shard name (`shard_name`'s third argument)."""
    m = _GENERATION.search(name)
    return int(m.group(1)) if m else 0


def input_glob(index: int) -> str:
    """The shards of input `index`, finished or not (`.tmp`): what a redo of the input removes."""
    return f"part-{index:06d}-*"


def rejects_name(index: int) -> str:
    return f"{REJECTS_DIR}/part-{index:06d}.jsonl"


def marker_name(index: int) -> str:
    return f"{PROGRESS_DIR}/{index:06d}.json"


def rank_manifest_name(rank: int, world_size: int) -> str:
    return f"manifest.rank{rank}-of{world_size}.json"


def manifest_name(rank: int, world_size: int) -> str:
    """The manifest a rank writes: the directory's own when it is the only one."""
    return MANIFEST if world_size == 1 else rank_manifest_name(rank, world_size)
