"""`deepspeed aunet/train.py` with 2 CPU ranks under ZeRO-3: exact resume, SIGKILL recovery,
early errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from aunet import Manifest, segment_corpus
from aunet.training.checkpoint import latest_complete
from helpers import REPO_ROOT, communicate_or_kill, cpu_dist_env, venv_script
from segment_fixtures import sample_texts, write_jsonl
from train_run import CONFIG, TRAIN, launch, loader_states, metrics, overrides, rank_batch, run, validation
import wandb_records

# Every test here launches the DeepSpeed launcher (or reads the session's trained run, which
# one launch made), except the last two, which run the trainer's argument checks alone.

def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files under `directory`, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.distributed
def test_every_logged_metric_goes_to_tensorboard_and_wandb(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                expected.setdefault(k, []).append((r["step"], float(v)))
    assert {"loss", "bpb", "lr", "grad_norm", "bytes_per_s", "mfu", "val_bpb"} <= set(expected)
    got = tensorboard_scalars(trained_run / "tensorboard")
    assert set(got) == set(expected)
    for key, series in expected.items():
        # Event files hold float32: equal to the JSON values within float32 rounding.
        assert [s for s, _ in got[key]] == [s for s, _ in series], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in series], rel=1e-6, abs=1e-30), key
    (log,) = (trained_run / "wandb").glob("offline-run-*/run-*.wandb")
    rows = wandb_records.history(log)  # W&B keeps one row per step: validation joins its step's
    assert sorted(rows) == sorted({r["step"] for r in records})
    for r in records:
        for k, v in r.items():
            if k != "step":
                assert rows[r["step"]][k] == pytest.approx(v, rel=1e-12), (r["step"], k)
    assert wandb_records.run_config(log)["model"]["dimensions"] == [48, 64, 96]  # the run's config is attached


@pytest.mark.distributed
def test_validation_bpb_is_logged_at_eval_steps(trained_run):
    val = validation(trained_run)
    assert sorted(val) == [3, 6]
    assert all(0 < v["val_bpb"] < 10 and v["val_bytes"] > 0 for v in val.values())


@pytest.mark.distributed
def test_logged_flops_count_the_bucketed_stages_and_mfu_uses_the_useful_ones(trained_run):
    """Each record counts the FLOPs of the batches' real positions (useful) and of what the
    model ran (executed, stages bucketed): useful <= executed <= the stages padded to
    max_seqlens, and MFU is the useful share."""
    from aunet.config import load_config
    from aunet.model.flops import flops_per_byte

    cfg, _ = load_config(trained_run / "config.yaml")
    padded = flops_per_byte(cfg.model, cfg.data.seq_len, padded=True).total
    records = metrics(trained_run)
    assert sorted(records) == list(range(1, 7))
    for r in records.values():
        assert 0 < r["useful_flops_per_byte"] < r["executed_flops_per_byte"] <= padded * (1 + 1e-9)
        assert r["mfu"] / r["mfu_executed"] == pytest.approx(r["useful_flops_per_byte"] / r["executed_flops_per_byte"])


@pytest.mark.distributed
def test_exact_resume_equals_straight_run(tmp_path, data_root, trained_run):
    resumed = tmp_path / "resumed"
    run(["--stop-at", "4", *overrides(data_root, resumed, 6), "logging.tensorboard=true"])
    assert max(metrics(resumed)) == 4
    out = run([*overrides(data_root, resumed, 6), "logging.tensorboard=true"])
    assert "resumed from" in out
    # The resumed run continues the TensorBoard curves: one point per step, the same as the file.
    assert [s for s, _ in tensorboard_scalars(resumed / "tensorboard")["loss"]] == list(range(1, 7))
    a, b = metrics(trained_run), metrics(resumed)
    # The same 2-rank layout, batch shapes and code, one thread per rank (cpu_dist_env): as a
    # rule the very same floats, but these are other processes, and nothing promises that their
    # kernels pick the same paths. 1e-5 relative is far below what a wrong resume moves: another
    # batch changes the loss by a few hundredths, a lost optimizer state by about 1e-3.
    for step in range(1, 7):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5), (step, a[step], b[step])
        assert b[step]["bpb"] == pytest.approx(a[step]["bpb"], rel=1e-5)
    # Same batches on every rank: the loader states after the last step are identical.
    assert loader_states(trained_run, 6) == loader_states(resumed, 6)
    assert loader_states(trained_run, 6)[0] != loader_states(trained_run, 6)[1]  # ranks read different data


@pytest.mark.distributed
def test_sigkilled_rank_resumes_from_last_complete_checkpoint(tmp_path, data_root):
    dump = tmp_path / "run"
    args = [*overrides(data_root, dump, 8), "optim.lr=1e-3"]
    proc = launch(args)
    marker = dump / "checkpoints" / "step_00000004" / "COMPLETE.json"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The rank processes carry --local_rank=N; the per-node launcher also names train.py.
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if any(a.startswith("--local_rank=") for a in p.cmdline())]
    assert len(ranks) == 2
    ranks[1].send_signal(signal.SIGKILL)
    communicate_or_kill(proc, 120)
    assert proc.returncode != 0
    root = dump / "checkpoints"
    newest = latest_complete(root)
    assert newest is not None and newest >= 4
    # A checkpoint damaged after its save (or cut short by a crash) is never picked.
    victim = max((root / f"step_{newest:08d}").rglob("*.pt"), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:100])
    assert latest_complete(root) == newest - 2
    out = run(args)
    assert f"resumed from {root / f'step_{newest - 2:08d}'}" in out
    assert max(metrics(dump)) == 8


@pytest.mark.distributed
def test_export_gives_a_model_that_loads_without_deepspeed(tmp_path, trained_run, trained_export, data_root):
    import numpy as np
    import torch

    from aunet.config import DataArgs
    from aunet.data import PackedLoader
    from aunet.inference.export import load_model
    from aunet.model import HierarchicalTransformer, bpb

    model, cfg = load_model(trained_export)  # `aunet export --checkpoints` (tests/conftest.py)
    fresh = HierarchicalTransformer(cfg.model).eval()
    batch = next(PackedLoader(DataArgs(sources={str(data_root / "stdlib"): 1.0}, seq_len=128, batch_size=4, load_async=False, seed=777)))
    with torch.no_grad():
        trained_bpb = float(bpb(model(batch["tokens"], batch["levels"])[0], batch["targets"]))
        fresh_bpb = float(bpb(fresh(batch["tokens"], batch["levels"])[0], batch["targets"]))
    assert np.isfinite(trained_bpb) and trained_bpb < fresh_bpb
    # The export holds exactly the weights of the step it names: by default the newest (6) ...
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors import safe_open

    with safe_open(str(trained_export / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["step"] == "6"
        consolidated = get_fp32_state_dict_from_zero_checkpoint(str(trained_run / "checkpoints"), tag="step_00000006")
        assert sorted(f.keys()) == sorted(consolidated)
        assert all(torch.equal(f.get_tensor(k), consolidated[k]) for k in consolidated)  # the same fp32 copies: exact
    # ... and with --step 4 those that the trained engine ran step 5 with: the exported model's loss
    # on each rank's step-5 batch (the loaders restored from checkpoint 4) is the logged loss.
    proc = subprocess.run([venv_script("aunet"), "export", "--checkpoints", str(trained_run / "checkpoints"), "--step", "4",
                           "--out", str(tmp_path / "export4")], capture_output=True, text=True, env=cpu_dist_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    model4, _ = load_model(tmp_path / "export4")
    losses = []
    for rank, state in enumerate(loader_states(trained_run, 4)):
        b = rank_batch(data_root, cfg, rank, state)
        with torch.no_grad():
            losses.append(float(model4(b["tokens"], b["levels"], b["targets"], b["target_levels"], b["target_bytes"])[1]))
    # 1e-6: one process and one rank's batch at a time against two ranks' mean, the same maths
    # summed in other orders; a wrong step's weights or batch moves the loss by far more.
    assert abs(sum(losses) / 2 - metrics(trained_run)[5]["loss"]) <= 1e-6, (losses, metrics(trained_run)[5])
    missing = subprocess.run([venv_script("aunet"), "export", "--checkpoints", str(tmp_path / "none"), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert missing.returncode == 1 and "no complete checkpoint" in missing.stderr


@pytest.mark.distributed
def test_raw_text_sources_are_segmented_by_both_ranks_then_trained_on(tmp_path, data_root):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_jsonl(raw / "part0.jsonl.zst", sample_texts(400, seed=3))
    write_jsonl(raw / "part1.jsonl", sample_texts(400, seed=4))
    write_jsonl(raw / "part2.jsonl", sample_texts(300, seed=5))
    dump = tmp_path / "run"
    args = [*overrides(tmp_path, dump, 2), "data.sources={raw: 1.0}"]
    out = run(args)
    cache = dump / "segmented" / "data" / "raw"
    merged = Manifest.load(cache)
    assert merged.documents_written == 1100 and merged.strategy == {"word1": "1@1", "word2": "2@1"}
    assert merged.world_size == 2 and merged.ranks == [0, 1]  # each rank segmented its own files
    assert sorted(p.name for p in cache.glob("manifest.rank*")) == ["manifest.rank0-of2.json", "manifest.rank1-of2.json"]
    assert "by 2 rank(s)" in out
    single = segment_corpus(raw, tmp_path / "single", {"word1": "1@1", "word2": "2@1"}, on_error="skip")
    assert [(s.path, s.checksum) for s in merged.shards] == [(s.path, s.checksum) for s in single.shards]
    assert max(metrics(dump)) == 2


@pytest.mark.slow  # 2 s: starts the trainer in subprocesses
def test_bad_config_and_missing_data_fail_early(tmp_path):
    env = cpu_dist_env()
    bad = subprocess.run([sys.executable, TRAIN, "--config", CONFIG, "optim.lr=-1"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert bad.returncode == 2 and "optim.lr" in bad.stderr
    missing = subprocess.run([sys.executable, TRAIN, "--config", CONFIG, f"data.root_dir={tmp_path / 'nowhere'}"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr


def test_commands_that_read_deepspeed_checkpoints_say_they_are_pickles():
    train_help = subprocess.run([sys.executable, TRAIN, "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    export_help = subprocess.run([venv_script("aunet"), "export", "--help"], capture_output=True, text=True)
    for proc in (train_help, export_help):
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())
        assert "pickle" in text and "trust" in text, text
    assert "checkpoint.init_ckpt_path" in " ".join(train_help.stdout.split())
