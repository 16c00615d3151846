"""Faults around checkpoints (2 CPU ranks, ZeRO-3, real DeepSpeed and real files): damaged
checkpoints are detected by their CRC-32s (or by a loader state that does not load) and skipped
with a warning naming the file; a changed model config is refused naming the keys; a run gone
non-finite stops without saving or pruning. The session's 6-step run (tests/conftest.py) is
shared by every test here; each works on a copy of it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aunet.training.checkpoint import MARKER, complete_steps, crc32_file, is_complete, mark_complete, prune, tag_for, verify
from helpers import REPO_ROOT, communicate_or_kill, cpu_dist_env, free_port
from train_run import CONFIG, TRAIN, launch, metrics, overrides, run


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    dump = tmp_path / "run"
    shutil.copytree(trained_run, dump)
    return dump


def flip_middle(path: Path) -> None:
    """Damage a file in place, keeping its size (what a size check cannot see)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def step_dir(dump: Path, step: int) -> Path:
    return dump / "checkpoints" / tag_for(step)


def records(dump: Path) -> list[dict]:
    return [r for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.distributed
def test_markers_carry_a_crc32_per_file_that_verify_checks(trained_run):
    d = step_dir(trained_run, 6)
    marker = json.loads((d / MARKER).read_text())
    assert sorted(marker["crc32"]) == sorted(marker["files"]) and len(marker["files"]) >= 5
    assert all(crc32_file(d / name) == crc for name, crc in marker["crc32"].items())
    assert not list(d.glob("crc32_rank*"))  # the ranks' shares are merged into the marker
    assert verify(d) == [] and verify(d, 0, 2) == [] and verify(d, 1, 2) == []


@pytest.mark.distributed
def test_damaged_checkpoints_are_skipped_naming_the_file_and_resume_stays_exact(trained_run, tmp_path, data_root):
    dump = copy_run(trained_run, tmp_path)
    # Step 6: the largest DeepSpeed file damaged in place (same size). Step 4: a loader state that
    # does not load (KeyError before), in a marker of the kind written before checksums existed.
    victim = max(step_dir(dump, 6).glob("*.pt"), key=lambda p: p.stat().st_size)
    flip_middle(victim)
    four = step_dir(dump, 4)
    marker = json.loads((four / MARKER).read_text())
    del marker["crc32"]
    (four / MARKER).write_text(json.dumps(marker))
    state = four / "loader_rank1.json"
    state.write_text(state.read_text().replace('"batches"', '"batchez"'))
    assert is_complete(step_dir(dump, 6)) and is_complete(four)  # sizes alone see nothing wrong
    assert [p for p in verify(step_dir(dump, 6)) if str(victim) in p and "CRC-32" in p]

    out = run(overrides(data_root, dump, 6))
    assert f"checkpoint {step_dir(dump, 6)} is damaged: {victim}: CRC-32" in out, out[-3000:]
    assert f"checkpoint {four} is damaged: {state}: not a loader state (KeyError" in out
    assert f"resumed from {step_dir(dump, 2)}" in out
    # Batch for batch: the steps trained again have the uninterrupted run's losses.
    reference = metrics(trained_run)
    redone = records(dump)[6:]
    assert [r["step"] for r in redone] == [3, 4, 5, 6]
    # Within 1e-5 relative, as test_trainer.py's exact resume (another process; a wrong batch
    # or optimizer state moves the loss far more).
    assert all(r["loss"] == pytest.approx(reference[r["step"]]["loss"], rel=1e-5) for r in redone), redone
    assert complete_steps(dump / "checkpoints") == [2, 4, 6] and all(verify(step_dir(dump, s)) == [] for s in (2, 4, 6))


@pytest.mark.distributed
def test_a_run_with_every_checkpoint_damaged_stops_and_deletes_nothing(trained_run, tmp_path, data_root):
    dump = copy_run(trained_run, tmp_path)
    for step in (2, 4, 6):
        flip_middle(step_dir(dump, step) / "loader_rank0.json")
    proc = launch(overrides(data_root, dump, 6))
    out, _ = communicate_or_kill(proc, 600)
    assert proc.returncode == 1
    assert "every complete checkpoint (step_00000002, step_00000004, step_00000006) is damaged" in out, out[-3000:]
    assert complete_steps(dump / "checkpoints") == [2, 4, 6]
    assert len(records(dump)) == 6  # nothing trained from scratch


@pytest.mark.distributed
def test_resuming_with_another_model_config_names_the_keys(trained_run, tmp_path, data_root):
    env = {**cpu_dist_env(), "MASTER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, TRAIN, "--config", CONFIG, *overrides(data_root, tmp_path / "run", 8),
                           f"checkpoint.path={trained_run / 'checkpoints'}", "model.dimensions=[48,64,128]"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"checkpoint {step_dir(trained_run, 6)} was written with another config" in proc.stderr, proc.stderr[-3000:]
    assert "model.dimensions: [48, 64, 128] in this run, [48, 64, 96] in the checkpoint" in proc.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before writing anything


@pytest.mark.distributed
def test_a_run_gone_non_finite_stops_without_saving_or_pruning(trained_run, tmp_path, data_root):
    dump = copy_run(trained_run, tmp_path)
    # A learning rate of 1e30 wrecks the weights in one step: from then on every gradient norm
    # overflows (DeepSpeed skips those updates) and nothing recovers. keep=1 would prune steps 2
    # and 4 at the next save.
    args = [a for a in overrides(data_root, dump, 12) if not a.startswith("checkpoint.dump.keep=")]
    proc = launch([*args, "optim.lr=1e30", "optim.max_bad_steps=2", "checkpoint.dump.keep=1"])
    out, _ = communicate_or_kill(proc, 600)
    assert proc.returncode == 1, out[-3000:]
    assert "optim.max_bad_steps = 2); stopped without saving or pruning" in out, out[-3000:]
    logged = {r["step"]: math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records(dump)[6:]}
    bad = [s for s, finite in logged.items() if not finite]
    assert bad and max(logged) == bad[0] + 1  # stopped at the second bad step in a row
    assert complete_steps(dump / "checkpoints") == [2, 4, 6]  # nothing saved after a bad step, nothing pruned
    assert "not saving a checkpoint" in out or bad[0] % 2 == 1


def test_prune_never_counts_damaged_checkpoints(tmp_path):
    for step in (2, 4, 6):
        d = step_dir(tmp_path, step)
        d.mkdir(parents=True)
        (d / "model.pt").write_bytes(bytes(range(200)))
        (d / "loader_rank0.json").write_text("{}")
        mark_complete(tmp_path / "checkpoints", step, {})
    root = tmp_path / "checkpoints"
    flip_middle(root / tag_for(4) / "model.pt")
    assert verify(root / tag_for(4))  # found damaged at resume
    # keep=2 counts good checkpoints: 2 and 6 stay, and the damaged 4 between them too.
    assert prune(root, keep=2, damaged={4}) == []
    assert prune(root, keep=1, damaged={4}) == [2, 4]
    assert complete_steps(root) == [6]
