"""A rank SIGKILLed in the middle of `save_checkpoint` (2 CPU ranks, ZeRO-3): the half-written
checkpoint is never picked, the same command resumes from the previous complete one, and every
logged loss equals an uninterrupted run's exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aunet.training.checkpoint import MARKER, is_complete, latest_complete
from helpers import REPO_ROOT, communicate_or_kill, cpu_dist_env, deepspeed_cmd
from train_run import CONFIG, loader_states, metrics, overrides

# The trainer, with DeepSpeed's file writer wrapped: on rank 0, in the save of checkpoint TAG,
# right after DeepSpeed has written its first file there, the process SIGKILLs itself, once
# (the file AUNET_TEST_KILLED records it, so that rerunning the same command trains through).
KILL_DURING_SAVE = '''
import os, signal, sys
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator

ensure_ds_accelerator()
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

killed = Path(os.environ["AUNET_TEST_KILLED"])
tag = os.environ["AUNET_TEST_KILL_TAG"]
real_save = TorchCheckpointEngine.save


def save(self, state_dict, path):
    real_save(self, state_dict, path)
    if Path(path).parent.name == tag and dist.get_rank() == 0 and not killed.exists():
        killed.write_text(str(path))
        os.kill(os.getpid(), signal.SIGKILL)


TorchCheckpointEngine.save = save
from aunet.train import main

sys.exit(main())
'''


def all_losses(dump: Path) -> list[tuple[int, float]]:
    """Every training record of metrics.jsonl in file order, those of the killed run included."""
    return [(r["step"], r["loss"]) for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.distributed
def test_sigkill_during_save_resumes_from_the_previous_checkpoint_with_identical_losses(tmp_path, data_root, trained_run):
    straight = trained_run  # the uninterrupted run: the same 6 steps (tests/conftest.py)
    script = tmp_path / "kill_during_save.py"
    script.write_text(KILL_DURING_SAVE)
    dump = tmp_path / "run"
    killed = tmp_path / "killed"
    env = {**cpu_dist_env(), "AUNET_TEST_KILLED": str(killed), "AUNET_TEST_KILL_TAG": "step_00000004"}

    def launch() -> tuple[int, str]:
        cmd = deepspeed_cmd(script, "--config", CONFIG, *overrides(data_root, dump, 6))  # a fresh port each time
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        out, _ = communicate_or_kill(proc, 600)
        return proc.returncode, out

    code, out = launch()
    assert code != 0 and killed.exists(), out[-3000:]
    root = dump / "checkpoints"
    half = root / "step_00000004"
    written = [p.name for p in half.iterdir()]
    assert Path(killed.read_text()).name in written  # DeepSpeed had begun writing step 4 ...
    assert MARKER not in written and not is_complete(half)  # ... and it was never completed
    assert latest_complete(root) == 2
    assert max(s for s, _ in all_losses(dump)) == 4  # step 4 was trained and logged before its save

    code, out = launch()  # the same command
    assert code == 0, out[-3000:]
    assert f"resumed from {root / 'step_00000002'}" in out
    assert latest_complete(root) == 6 and is_complete(half)
    reference = {step: r["loss"] for step, r in metrics(straight).items()}
    records = all_losses(dump)
    assert [s for s, _ in records] == [1, 2, 3, 4, 3, 4, 5, 6]
    # Within 1e-5 relative, as test_trainer.py's exact resume (another process; a wrong batch
    # or optimizer state moves the loss far more).
    for step, loss in records:
        assert loss == pytest.approx(reference[step], rel=1e-5), (step, loss, reference[step])
    assert loader_states(dump, 6) == loader_states(straight, 6)
