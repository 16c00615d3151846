"""Where every benchmark's JSON goes (the tables of docs/benchmarks.md are copied from these files)."""

from __future__ import annotations

import json
from pathlib import Path


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
