"""Checkpoint directories that are either complete or ignored.

A checkpoint is `ROOT/step_{N:08d}/`, filled by DeepSpeed (`save_checkpoint(ROOT, tag)`) and
by each rank's loader state. Only when every rank has finished does rank 0 write
`COMPLETE.json` (atomically) listing every file with its size and its CRC-32. A directory
counts as complete when its marker exists and its files still have the listed sizes (a stat
each), so a crash or a SIGKILL during a save, or a file truncated afterwards, never yields a
checkpoint that is picked. Before a resume loads one, `verify` also recomputes the CRC-32s, which
catches data damaged in place (same size). Older checkpoints are pruned after each save
(`prune`); damaged ones never count towards `keep`.

Why CRC-32 (zlib): it only has to catch accidental damage (a checkpoint is a pickle anyway, so
it is trusted, not authenticated), and it is the fastest checksum in the standard library:
`crc32_file` reads 2.8 GB/s per core from the page cache, against 1.4 GB/s for SHA-256 and
about 1 GB/s for BLAKE2b (measured on 512 MiB on a 2-core CPU box). Each rank checksums a 1/W
share of the files, right after the save (the data is still in the page cache) and again before
a resume, so the cost is about checkpoint bytes / (W x 2.8 GB/s), plus the reads where the
files are no longer cached.
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

from aunet.io import write_atomic

MARKER = "COMPLETE.json"
_TAG = re.compile(r"^step_(\d{8})$")
#: One rank's share of the checksums, written before the marker and merged into it.
_SHARE = re.compile(r"^crc32_rank\d+\.json$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(directory: Path) -> int | None:
    """N for a directory named like `tag_for(N)`, else None."""
    m = _TAG.match(directory.name)
    return int(m.group(1)) if m else None


def crc32_file(path: Path, chunk: int = 1 << 22) -> str:
    crc, buf = 0, bytearray(chunk)  # one reused buffer: a fresh 4 MiB block per read costs page faults
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return f"{crc:08x}"


def _data_files(directory: Path) -> list[str]:
    return [str(p.relative_to(directory)) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MARKER and not _SHARE.match(p.name) and not p.name.endswith(".tmp")]


def _share(names: list[str], rank: int, world: int) -> list[str]:
    return names[rank::world]


def checksum_share(directory: Path, rank: int, world: int) -> None:
    """Every rank, after a barrier that follows every rank's writes: the CRC-32s of its share of
    the files, for `mark_complete` to merge."""
    sums = {name: crc32_file(directory / name) for name in _share(_data_files(directory), rank, world)}
    _write(directory / f"crc32_rank{rank}.json", sums)


def mark_complete(root: Path, step: int, info: dict) -> Path:
    """Rank 0, after a barrier that follows every rank's writes (and `checksum_share`s): the
    marker, with each file's size and CRC-32 (computed here for files no share covers)."""
    directory = root / tag_for(step)
    shares = sorted(p for p in directory.iterdir() if _SHARE.match(p.name))
    sums: dict[str, str] = {}
    for p in shares:
        sums.update(json.loads(p.read_text()))
    names = _data_files(directory)
    files = {name: (directory / name).stat().st_size for name in names}
    crc32 = {name: sums[name] if name in sums else crc32_file(directory / name) for name in names}
    marker = _write(directory / MARKER, {"step": step, "files": files, "crc32": crc32, **info})
    for p in shares:
        p.unlink()
    return marker


def read_marker(directory: Path) -> dict:
    return json.loads((directory / MARKER).read_text())


def verify(directory: Path, rank: int = 0, world: int = 1) -> list[str]:
    """Problems (each naming its file) with this rank's share of a complete checkpoint's files:
    sizes and CRC-32s against the marker. Markers written before checksums existed are checked
    for sizes only."""
    marker = read_marker(directory)
    sums = marker.get("crc32", {})
    problems = []
    for name in _share(sorted(marker["files"]), rank, world):
        path = directory / name
        try:
            size = path.stat().st_size
            if size != marker["files"][name]:
                problems.append(f"{path}: {size} bytes, {MARKER} lists {marker['files'][name]}")
            elif name in sums and (got := crc32_file(path)) != sums[name]:
                problems.append(f"{path}: CRC-32 {got}, {MARKER} lists {sums[name]} (the file changed after it was saved)")
        except OSError as e:
            problems.append(f"{path}: unreadable ({e.strerror or e})")
    return problems


def _write(path: Path, payload: dict) -> Path:
    write_atomic(path, json.dumps(payload, indent=1).encode())
    return path


def is_complete(directory: Path) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    for name, size in marker.get("files", {}).items():
        f = directory / name
        if not f.is_file() or f.stat().st_size != size:
            return False
    return bool(marker.get("files"))


def complete_steps(root: Path) -> list[int]:
    if not root.is_dir():
        return []
    steps = []
    for d in root.iterdir():
        m = _TAG.match(d.name)
        if m and d.is_dir() and is_complete(d):
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_complete(root: Path) -> int | None:
    steps = complete_steps(root)
    return steps[-1] if steps else None


def prune(root: Path, keep: int, damaged: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Delete the checkpoints older than the oldest of the newest `keep` good ones, and
    incomplete ones older than the newest complete one (leftovers of crashed saves). Steps in
    `damaged` (found corrupt by `verify`) are not good: they never count towards `keep`, so
    pruning never goes below the newest checkpoint that passed its check. Returns the deleted
    steps."""
    steps = complete_steps(root)
    good = [s for s in steps if s not in damaged]
    if keep <= 0 or not good:
        return []
    cutoff = good[-keep] if len(good) >= keep else good[0]
    doomed = [s for s in steps if s < cutoff]
    newest = steps[-1]
    for d in root.iterdir():
        m = _TAG.match(d.name)
        if m and int(m.group(1)) < newest and int(m.group(1)) not in steps:
            doomed.append(int(m.group(1)))
    for step in doomed:
        shutil.rmtree(root / tag_for(step), ignore_errors=True)
    return sorted(doomed)
