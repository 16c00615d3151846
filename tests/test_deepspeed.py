"""The distributed stack works here: DeepSpeed ZeRO-3 on 2 CPU ranks over gloo."""

import json
from pathlib import Path

import pytest

from helpers import DS_SHM_BUFFERS, REPO_ROOT, free_port, run_deepspeed


@pytest.mark.distributed
def test_zero3_one_optimizer_step_on_two_cpu_ranks(tmp_path):
    port = free_port()
    proc = run_deepspeed(REPO_ROOT / "tests" / "distributed" / "zero3_toy_step.py", str(tmp_path), port=port)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # DeepSpeed's CPU shared-memory collective is not started (aunet.training.accelerator.init_distributed):
    # it would leave two 69 MB buffers per rank in /dev/shm, named after the port, after every run.
    assert not list(Path("/dev/shm").glob(f"{DS_SHM_BUFFERS}_{port}_*"))
    assert "deepspeed_shm_comm" not in proc.stdout + proc.stderr

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, seen in enumerate(ranks):
        assert seen["rank"] == r
        assert seen["world_size"] == 2
        assert seen["backend"] == "gloo"
        assert seen["zero_stage"] == 3
        # ZeRO-3 partitions the parameter: each rank holds about half of it.
        assert seen["local_shard_numel"] * 2 >= seen["full_numel"] > seen["local_shard_numel"]
        assert seen["changed"] > 0, "the optimizer step left the weights unchanged"
    # After the step both ranks gather the same full parameter. Its fp64 sum, taken in two
    # processes: within 1e-12 relative, so that the check rests on equal weights, not on two
    # processes summing in the same order; a rank whose update differed (the step moves
    # weights by about the learning rate) would be off by far more.
    assert ranks[0]["after_checksum"] == pytest.approx(ranks[1]["after_checksum"], rel=1e-12, abs=1e-12)
    # Each rank saw its own data, so the step really combined two different gradients.
    assert ranks[0]["loss"] != ranks[1]["loss"]
