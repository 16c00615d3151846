"""Running `deepspeed aunet/train.py` on 2 CPU ranks from the tests, and reading what a run
wrote (metrics, loader states, the batch a rank trains on). Shared by the training tests and
by the session's trained run (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

from helpers import REPO_ROOT, communicate_or_kill, cpu_dist_env, deepspeed_cmd

TRAIN = str(REPO_ROOT / "aunet" / "train.py")
CONFIG = str(REPO_ROOT / "configs" / "tiny_aunet3.yaml")

# What the session's trained run adds to overrides(): held-out bpb at steps 3 and 6, and the
# TensorBoard and W&B (offline) writers, so that one run serves every test that reads a run.
TRAINED_EXTRA = ["eval.validation.sources.heldout=1.0", "eval.validation.max_steps=3", "checkpoint.eval.every=3",
                 "logging.tensorboard=true", "logging.wandb.mode=offline", "logging.wandb.project=aunet-tests"]
TRAINED_STEPS = 6


def overrides(data_root: Path, dump: Path, steps: int) -> list[str]:
    return [f"data.root_dir={data_root}", f"dump_dir={dump}", f"steps={steps}", "data.seq_len=128", "data.batch_size=4",
            "model.max_seqlens=[-1,64,48]", "logging.freq=1", "checkpoint.dump.every=2", "checkpoint.dump.keep=0", "optim.warmup=2"]


def launch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(deepspeed_cmd(TRAIN, "--config", CONFIG, *args), env=cpu_dist_env(), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run(args: list[str]) -> str:
    proc = launch(args)
    out, _ = communicate_or_kill(proc, 600)
    assert proc.returncode == 0, out[-4000:]
    return out


def metrics(dump: Path) -> dict[int, dict]:
    """Training records by step (validation records, which carry val_bpb, are left out)."""
    return {r["step"]: r for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def validation(dump: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "val_bpb" in r}


def rank_batch(data_root: Path, cfg, rank: int, state: dict | None = None, world_size: int = 2) -> dict:
    """The next batch of rank `rank`'s training loader (from loader state `state`, else from the
    start), built as the trainer builds it for `cfg`."""
    from aunet.data import PackedLoader

    data = dataclasses.replace(cfg.data, root_dir=None, sources={str(data_root / "stdlib"): 1.0}, load_async=False)
    loader = PackedLoader(data, rank, world_size)
    if state is not None:
        loader.load_state_dict(state)
    try:
        return next(loader)
    finally:
        loader.close()


def loader_states(dump: Path, step: int) -> list[dict]:
    d = dump / "checkpoints" / f"step_{step:08d}"
    return [json.loads((d / f"loader_rank{r}.json").read_text()) for r in range(2)]
