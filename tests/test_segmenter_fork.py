"""Fork safety: DataLoader workers forked after the parent used the segmenter's threads."""

import hashlib
import subprocess
import sys

import pytest

from aunet import Segmenter
from helpers import REPO_ROOT


@pytest.mark.slow  # 2 s: forked DataLoader workers
def test_masks_in_forked_dataloader_workers_match_the_parent():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "scripts" / "fork_loader.py")],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    seen = dict(line.split() for line in lines if line.strip())
    assert len(seen) == 64

    seg = Segmenter({"word1": "1@1", "word2": "2@1"})
    for i in range(64):
        doc = f"document {i}: the quick brown fox, {i * 7919} jumps.\n".encode() * (1 + i % 5)
        assert seen[str(i)] == hashlib.sha1(seg.levels(doc).tobytes()).hexdigest()
