"""A run killed with SIGKILL at any point, then rerun, ends with the same shards (checksums)
as an uninterrupted run; partial files never look finished."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from aunet.segment.shards import Manifest, open_shard
from helpers import venv_script
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import segment

OPTIONS = [*STRATEGY_ARGS, "--shard-size", "48KB"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    root = tmp_path_factory.mktemp("corpus")
    inputs = root / "in"
    inputs.mkdir()
    for i in range(4):
        write_jsonl(inputs / f"in{i}.jsonl.zst", sample_texts(6000, seed=i))
    segment(inputs, "--out", root / "reference", *OPTIONS)
    reference = [(s.path, s.checksum) for s in Manifest.load(root / "reference").shards]
    assert len(reference) > 20
    return inputs, reference


def start(inputs: Path, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([venv_script("aunet-segment"), str(inputs), "--out", str(out), *OPTIONS, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def crash(proc: subprocess.Popen) -> None:
    """SIGKILL the run and its workers at once, as a crash would.

    multiprocessing's resource tracker is spared: once every other process is gone it unlinks the
    semaphores they held. Killing it too (a plain killpg) left ~30 files in /dev/shm per test run.
    """
    os.killpg(proc.pid, signal.SIGSTOP)  # a stopped group cannot fork while it is enumerated
    members, trackers = [], []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == proc.pid:
                (trackers if "resource_tracker" in " ".join(p.cmdline()) else members).append(p)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    for p in members:
        p.send_signal(signal.SIGKILL)
    proc.wait()
    for p in trackers:
        p.send_signal(signal.SIGCONT)
    psutil.wait_procs(trackers, timeout=30)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Crash the run (see `crash`) as soon as `ready()`; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            crash(proc)
            return True
        time.sleep(0.002)
    raise AssertionError("the run neither finished nor reached the kill point")


def assert_nothing_partial_looks_finished(out: Path) -> None:
    for shard in out.glob("part-*.arrow"):
        open_shard(shard).read_all()  # a finished name is a complete, readable file
    assert not (out / "manifest.json").exists() or Manifest.load(out)


KILL_POINTS = {
    "mid-shard": lambda out: any(out.glob("*.arrow.tmp")),
    "after-first-file": lambda out: (out / ".progress" / "000000.json").exists(),
    "after-some-shards": lambda out: len(list(out.glob("part-*.arrow"))) >= 7,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, corpus, point, workers):
    inputs, reference = corpus
    out = tmp_path / "out"
    killed = kill_when(start(inputs, out, "--workers", str(workers)), lambda: KILL_POINTS[point](out))
    assert killed, "the run finished before the kill point: make the corpus larger"
    assert_nothing_partial_looks_finished(out)
    # A second kill, during the resumed run, as soon as it writes again.
    kill_when(start(inputs, out, "--workers", str(workers)), lambda: any(out.glob("*.arrow.tmp")))
    assert_nothing_partial_looks_finished(out)
    segment(inputs, "--out", out, *OPTIONS)
    assert [(s.path, s.checksum) for s in Manifest.load(out).shards] == reference
    assert not list(out.glob("*.tmp"))
    assert "OK" in segment("verify", out).stdout
