"""On a terminal, aunet-segment shows a progress bar with documents/s, MB/s and an ETA."""

import os
import pty
import subprocess

from helpers import venv_script
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl


def test_progress_bar_on_a_terminal(tmp_path):
    write_jsonl(tmp_path / "a.jsonl.zst", sample_texts(3000))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([venv_script("aunet-segment"), str(tmp_path / "a.jsonl.zst"), "--out", str(tmp_path / "out"), *STRATEGY_ARGS],
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert "doc/s" in shown and "text" in shown and "MB/s" in shown
    assert "100%" in shown  # the total (input bytes) is known, so there is a percentage and ETA
