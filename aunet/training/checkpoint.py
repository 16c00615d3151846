"""Checkpoint directories that are either complete or ignored.

A checkpoint is `ROOT/step_{N:08d}/`, filled by DeepSpeed (`save_checkpoint(ROOT, tag)`) and
by each rank's loader state. Only when every rank has finished does rank 0 write
`COMPLETE.json` (atomically) listing every file with its size. Resume takes the newest
directory whose marker exists and whose files still have the listed sizes, so a crash or a
SIGKILL during a save, or a file truncated afterwards, never yields a checkpoint that is
picked. Older complete checkpoints beyond `keep` are deleted after each save.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from aunet.segment.shards import write_atomic

MARKER = "COMPLETE.json"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(directory: Path) -> int | None:
    """N for a directory named like `tag_for(N)`, else None."""
    m = _TAG.match(directory.name)
    return int(m.group(1)) if m else None


def mark_complete(root: Path, step: int, info: dict) -> Path:
    """Rank 0, after a barrier that follows every rank's writes."""
    directory = root / tag_for(step)
    files = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MARKER}
    return _write(directory / MARKER, {"step": step, "files": files, **info})


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


def prune(root: Path, keep: int) -> list[int]:
    """Delete complete checkpoints older than the newest `keep`, and incomplete ones older than
    the newest complete one (leftovers of crashed saves). Returns the deleted steps."""
    steps = complete_steps(root)
    if keep <= 0 or not steps:
        return []
    doomed = steps[:-keep]
    newest = steps[-1]
    for d in root.iterdir():
        m = _TAG.match(d.name)
        if m and int(m.group(1)) < newest and int(m.group(1)) not in steps:
            doomed.append(int(m.group(1)))
    for step in doomed:
        shutil.rmtree(root / tag_for(step), ignore_errors=True)
    return sorted(doomed)
