"""Check, look at and combine shard directories (`aunet-segment verify | inspect | merge`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from aunet.segment.segmenter import Segmenter
from aunet.segment.errors import ManifestError
from aunet.segment.layout import MANIFEST, RANK_MANIFEST_GLOB, SHARD_GLOB
from aunet.segment.shards import META_SOURCE, META_STRATEGY, Manifest, checksum_matches, open_shard
from aunet.segment.strategy_order import describe_strategy, same_strategy


def verify(directory: str | Path, deep: bool = False) -> list[str]:
    """Problems of a shard directory against its manifest (empty: all is well): missing, stray,
    truncated or changed shards, schema, strategy metadata, mask lengths and levels; `deep`
    also recomputes every mask. Raises `ManifestError` when the manifest itself is unreadable."""
    directory = Path(directory)
    manifest = Manifest.load(directory)
    problems = []
    try:
        segmenter = Segmenter(manifest.strategy)
    except (ValueError, TypeError) as e:
        raise ManifestError(f"{directory / MANIFEST}: strategy {manifest.strategy!r} is not valid: {e}",
                            file=str(directory / MANIFEST)) from e
    listed = {s.path for s in manifest.shards}
    for stray in sorted(directory.glob(SHARD_GLOB)):
        if stray.name not in listed:
            problems.append(f"{stray}: shard not in the manifest")
    for shard in manifest.shards:
        path = directory / shard.path
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if path.stat().st_size != shard.file_bytes:
            problems.append(f"{path}: {path.stat().st_size} bytes, manifest says {shard.file_bytes} (truncated or rewritten)")
            continue
        if not checksum_matches(path, shard.checksum):  # the algorithm the manifest names (old ones: SHA-256)
            problems.append(f"{path}: checksum mismatch (the file changed after it was written)")
            continue
        problems += _verify_shard(path, shard.documents, shard.text_bytes, manifest.strategy, segmenter if deep else None,
                                  shard.batches)
    return problems


def _verify_shard(path: Path, documents: int, text_bytes: int, strategy, segmenter: Segmenter | None,
                  plan: list[list[int]] | None = None) -> list[str]:
    """`plan`: the manifest's [rows, text bytes] per record batch, which the training loader
    checks batch by batch (older manifests have none)."""
    try:
        reader = open_shard(path)
    except (pa.ArrowInvalid, OSError) as e:
        return [f"{path}: not a readable Arrow IPC file: {e}"]
    schema = reader.schema
    problems = []
    for name in ("text", "level_mask"):
        if schema.get_field_index(name) < 0 or schema.field(name).type != pa.large_binary():
            problems.append(f"{path}: column {name!r} missing or not large_binary")
    meta = schema.metadata or {}
    try:
        theirs = json.loads(meta[META_STRATEGY])
        same = same_strategy(theirs, strategy)
    except (KeyError, ValueError, TypeError):
        theirs, same = None, False
    if not same:
        # Compared as ordered stage lists: a mapping's key order is its stage order.
        problems.append(f"{path}: strategy {describe_strategy(theirs) if theirs is not None else '(none)'} in the schema "
                        f"metadata differs from the manifest's {describe_strategy(strategy)}")
    if problems:
        return problems
    depth = len(strategy)
    row, seen_bytes = 0, 0
    if plan is not None and len(plan) != reader.num_record_batches:
        problems.append(f"{path}: {reader.num_record_batches} record batches, the manifest's plan lists {len(plan)}")
        plan = None
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        text, mask = batch.column("text"), batch.column("level_mask")
        t_off = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
        m_off = np.frombuffer(mask.buffers()[1], np.int64)[mask.offset : mask.offset + len(mask) + 1]
        lengths_t, lengths_m = np.diff(t_off), np.diff(m_off)
        bad = np.flatnonzero(lengths_t != lengths_m)
        if len(bad):
            i = int(bad[0])
            problems.append(f"{path}: row {row + i}: mask has {lengths_m[i]} levels for {lengths_t[i]} text bytes")
        levels = np.frombuffer(mask.buffers()[2], np.uint8)[m_off[0] : m_off[-1]] if len(mask) else np.zeros(0, np.uint8)
        if levels.size and int(levels.max()) > depth:
            problems.append(f"{path}: batch {b}: level {int(levels.max())} exceeds the strategy depth {depth}")
        if segmenter is not None:
            expected = segmenter.levels_batch(text)
            for i in range(len(text)):
                if expected[i].as_py() != mask[i].as_py():
                    problems.append(f"{path}: row {row + i}: mask differs from the strategy's")
                    break
        if plan is not None and [batch.num_rows, int(lengths_t.sum())] != list(plan[b]):
            problems.append(f"{path}: record batch {b}: {batch.num_rows} rows of {int(lengths_t.sum())} text bytes, "
                            f"the manifest's plan lists {plan[b][0]} of {plan[b][1]}")
        row += batch.num_rows
        seen_bytes += int(lengths_t.sum())
    if row != documents or seen_bytes != text_bytes:
        problems.append(f"{path}: {row} documents / {seen_bytes} bytes, manifest says {documents} / {text_bytes}")
    return problems


def _printable(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\n", "⏎").replace("\r", "␍").replace("\t", "⇥")


def render(text: bytes, levels: np.ndarray, depth: int, marker: str = "|") -> list[str]:
    """One line per stage: the text with `marker` after every byte pooled into that stage."""
    lines = []
    for stage in range(1, depth + 1):
        cuts = np.flatnonzero(levels >= stage) + 1
        pieces, start = [], 0
        for c in cuts:
            pieces.append(_printable(text[start:c]))
            start = c
        pieces.append(_printable(text[start:]))
        lines.append(f"  stage {stage}: " + marker.join(pieces))
    return lines


def inspect(path: str | Path, limit: int = 3, max_bytes: int = 400) -> Iterator[str]:
    """Lines showing up to `limit` documents of a shard directory (or one shard), each cut to
    `max_bytes`, with a `|` after every byte pooled into each stage."""
    path = Path(path)
    shards = [path / s.path for s in Manifest.load(path).shards] if path.is_dir() else [path]
    shown = 0
    for shard in shards:
        try:
            reader = open_shard(shard)
        except (pa.ArrowInvalid, OSError) as e:
            raise ManifestError(f"{shard}: not a readable Arrow IPC file: {e}", file=str(shard)) from e
        meta = reader.schema.metadata or {}
        strategy = json.loads(meta.get(META_STRATEGY, b"[]"))
        source = os.fsdecode(meta.get(META_SOURCE, b"?"))
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            for i in range(batch.num_rows):
                if shown >= limit:
                    return
                text = batch.column("text")[i].as_py()[:max_bytes]
                levels = np.frombuffer(batch.column("level_mask")[i].as_py(), np.uint8)[: len(text)]
                yield f"{shard.name} doc {i} ({source}, row/line {batch.column('row')[i].as_py()}, strategy {strategy}):"
                yield from render(text, levels, len(strategy))
                shown += 1


def merge(directory: str | Path, world_size: int | None = None) -> Manifest:
    """Combine the rank manifests (`manifest.rankR-ofW.json`) of a world_size > 1 run into
    `manifest.json` and return it; `ManifestError` when a rank is missing or options differ.
    Rank manifests of a run with another world size (a rerun on fewer or more ranks leaves the
    old ones behind) are removed first: those of `world_size`, or else of the run that wrote
    the newest rank manifest, are the current ones."""
    directory = Path(directory)
    parts = sorted(directory.glob(RANK_MANIFEST_GLOB))
    if not parts:
        raise ManifestError(f"{directory}: no rank manifests (manifest.rankR-ofW.json)", file=str(directory))
    if world_size is None:
        world_size = _world_size_of(max(parts, key=lambda p: p.stat().st_mtime_ns))
    stale = [p for p in parts if _world_size_of(p) != world_size]
    for p in stale:
        p.unlink()
    parts = [p for p in parts if p not in stale]
    if not parts:
        raise ManifestError(f"{directory}: no rank manifests of a {world_size}-rank run", file=str(directory))
    merged = combine(parts, [Manifest.load(directory, p.name) for p in parts], str(directory))
    merged.write(directory, MANIFEST)
    return merged


def _world_size_of(path: Path) -> int | None:
    m = re.fullmatch(r"manifest\.rank\d+-of(\d+)\.json", path.name)
    return int(m.group(1)) if m else None


def combine(parts: list, manifests: list[Manifest], where: str) -> Manifest:
    """The merged manifest of rank manifests (`parts` names them in errors; `where` is their
    directory), checked as `merge` describes; writes nothing (the datatrove writer stores it
    through its own filesystem). A datatrove task that received no document records no
    strategy list (None): it takes the others'."""
    known = [m.strategy for m in manifests if m.strategy is not None]
    if not known:
        raise ManifestError(f"{where}: no rank wrote a document, so no strategy list is known", file=where)
    for m in manifests:
        if m.strategy is None and not m.shards:
            m.strategy = known[0]
    first = manifests[0]
    for p, m in zip(parts, manifests):
        same = same_strategy(m.strategy, first.strategy) and (m.format, m.compression, m.text_field, m.extra_fields, m.world_size) == (
            first.format, first.compression, first.text_field, first.extra_fields, first.world_size)
        if not same:
            raise ManifestError(f"{p}: options differ from {parts[0]} (strategy, compression, fields or world size)", file=str(p))
        # Rank r did the inputs k with k % world_size == r of ITS list: only one list for all
        # ranks makes the ranks' shares disjoint and complete.
        if m.input_list != first.input_list:
            raise ManifestError(f"{p}: its input list ({_files(m)}) differs from that of {parts[0]} ({_files(first)}): "
                                "every rank must be given the same inputs", file=str(p))
    ranks = sorted(r for m in manifests for r in m.ranks)
    if ranks != list(range(first.world_size)):
        missing = sorted(set(range(first.world_size)) - set(ranks))
        raise ManifestError(f"{where}: ranks {missing} of {first.world_size} have no manifest yet (or a rank appears twice: {ranks})",
                            file=where)
    return Manifest.build(
        strategy=first.strategy, compression=first.compression, text_field=first.text_field, extra_fields=first.extra_fields,
        world_size=first.world_size, ranks=ranks, inputs=[i for m in manifests for i in m.inputs],
        shards=[s for m in manifests for s in m.shards], rejected_by_reason=[m.rejected_by_reason for m in manifests],
        input_list=first.input_list, version=first.version,
    )


def _files(m: Manifest) -> str:
    info = m.input_list if isinstance(m.input_list, dict) else {}
    return f"{info.get('files')} files, sha256 {str(info.get('sha256'))[:12]}" if info else "not recorded"
