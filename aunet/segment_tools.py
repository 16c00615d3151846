"""`aunet-segment verify | inspect | merge`: check, look at, and combine shard directories."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from aunet.segmenter import Segmenter
from aunet.shards import FORMAT, MANIFEST, META_STRATEGY, Manifest, open_shard, read_manifest, sha256_file


def verify(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="aunet-segment verify", description="Check a shard directory against its manifest.")
    p.add_argument("dir", type=Path)
    p.add_argument("--deep", action="store_true", help="also recompute every mask with the manifest's strategy")
    args = p.parse_args(argv)
    try:
        manifest = read_manifest(args.dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"aunet-segment verify: {e}", file=sys.stderr)
        return 1
    problems = verify_dir(args.dir, manifest, args.deep)
    for problem in problems:
        print(f"FAIL {problem}")
    docs = sum(s.documents for s in manifest.shards)
    text = sum(s.text_bytes for s in manifest.shards)
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir}")
        return 1
    print(f"OK {args.dir}: {len(manifest.shards)} shards, {docs:,} documents, {text:,} text bytes" + (" (masks recomputed)" if args.deep else ""))
    return 0


def verify_dir(directory: Path, manifest: Manifest, deep: bool) -> list[str]:
    problems = []
    segmenter = Segmenter(manifest.strategy)
    listed = {s.path for s in manifest.shards}
    for stray in sorted(directory.glob("part-*.arrow")):
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
        if sha256_file(path) != shard.sha256:
            problems.append(f"{path}: checksum mismatch (the file changed after it was written)")
            continue
        problems += _verify_shard(path, shard.documents, shard.text_bytes, manifest.strategy, segmenter if deep else None)
    return problems


def _verify_shard(path: Path, documents: int, text_bytes: int, strategy, segmenter: Segmenter | None) -> list[str]:
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
    if META_STRATEGY not in meta or json.loads(meta[META_STRATEGY]) != strategy:
        problems.append(f"{path}: strategy in the schema metadata differs from the manifest's")
    if problems:
        return problems
    depth = len(strategy)
    row, seen_bytes = 0, 0
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


def inspect(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="aunet-segment inspect", description="Print documents with their segment boundaries per stage.")
    p.add_argument("path", type=Path, help="a shard directory or one .arrow shard")
    p.add_argument("--limit", type=int, default=3, help="documents to print (default 3)")
    p.add_argument("--max-bytes", type=int, default=400, help="bytes of each document to print (default 400)")
    args = p.parse_args(argv)
    try:
        shards = [args.path / s.path for s in read_manifest(args.path).shards] if args.path.is_dir() else [args.path]
    except (FileNotFoundError, ValueError) as e:
        print(f"aunet-segment inspect: {e}", file=sys.stderr)
        return 1
    shown = 0
    for path in shards:
        try:
            reader = open_shard(path)
        except (pa.ArrowInvalid, OSError) as e:
            print(f"aunet-segment inspect: {path}: not a readable Arrow IPC file: {e}", file=sys.stderr)
            return 1
        meta = reader.schema.metadata or {}
        strategy = json.loads(meta.get(META_STRATEGY, b"[]"))
        source = meta.get(b"aunet.source", b"?").decode()
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            for i in range(batch.num_rows):
                if shown >= args.limit:
                    return 0
                text = batch.column("text")[i].as_py()[: args.max_bytes]
                levels = np.frombuffer(batch.column("level_mask")[i].as_py(), np.uint8)[: len(text)]
                print(f"{path.name} doc {i} ({source}, row/line {batch.column('row')[i].as_py()}, strategy {strategy}):")
                print("\n".join(render(text, levels, len(strategy))))
                shown += 1
    return 0


def merge(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="aunet-segment merge", description="Combine the rank manifests of a --world-size run into manifest.json.")
    p.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    parts = sorted(args.dir.glob("manifest.rank*-of*.json"))
    if not parts:
        print(f"aunet-segment merge: {args.dir}: no rank manifests (manifest.rankR-ofW.json)", file=sys.stderr)
        return 1
    manifests = [Manifest.from_json(p.read_bytes()) for p in parts]
    first = manifests[0]
    for p, m in zip(parts, manifests):
        same = (m.format, m.strategy, m.compression, m.text_field, m.extra_fields, m.world_size) == (
            first.format, first.strategy, first.compression, first.text_field, first.extra_fields, first.world_size)
        if not same:
            print(f"aunet-segment merge: {p}: options differ from {parts[0]} (strategy, compression, fields or world size)", file=sys.stderr)
            return 1
    ranks = sorted(r for m in manifests for r in m.ranks)
    if ranks != list(range(first.world_size)):
        missing = sorted(set(range(first.world_size)) - set(ranks))
        print(f"aunet-segment merge: ranks {missing} of {first.world_size} have no manifest yet (or a rank appears twice: {ranks})", file=sys.stderr)
        return 1
    merged = Manifest(
        format=FORMAT,
        version=first.version,
        strategy=first.strategy,
        compression=first.compression,
        text_field=first.text_field,
        extra_fields=first.extra_fields,
        world_size=first.world_size,
        ranks=ranks,
        inputs=sorted((i for m in manifests for i in m.inputs), key=lambda i: i["index"]),
        shards=sorted((s for m in manifests for s in m.shards), key=lambda s: s.path),
        documents_read=sum(m.documents_read for m in manifests),
        documents_written=sum(m.documents_written for m in manifests),
        documents_rejected=sum(m.documents_rejected for m in manifests),
        rejected_by_reason=dict(sum((Counter(m.rejected_by_reason) for m in manifests), Counter())),
    )
    merged.write(args.dir, MANIFEST)
    print(f"merged {len(parts)} rank manifests into {args.dir / MANIFEST}: {len(merged.shards)} shards, {merged.documents_written:,} documents")
    return 0


COMMANDS = {"verify": verify, "inspect": inspect, "merge": merge}
