"""benches/compare.py end to end at a tiny budget: four models trained by the real trainer."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from helpers import REPO_ROOT, free_port, run_in_session


@pytest.mark.distributed
def test_compare_trains_four_models_to_the_same_budget(tmp_path):
    out = tmp_path / "compare.json"
    # FLOPs per byte = budget / train bytes sizes the models (1e6 here); the budget then sets the
    # steps: about 30 per model, enough for two evaluations and the budget arithmetic.
    budget = 1.5e10
    cmd = [sys.executable, str(REPO_ROOT / "benches" / "compare.py"), "--budget", str(budget), "--train-bytes", "1.5e4",
           "--train-mb", "0.3", "--val-mb", "0.03", "--bpe-vocab", "400", "--evals", "2", "--batch-size", "2",
           "--seq-len", "128", "--workdir", str(tmp_path / "work"), "--out", str(out), "--port", str(free_port())]
    proc = run_in_session(cmd, 900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"aunet2", "aunet3", "bytes", "bpe"}
    for name, r in result["models"].items():
        # Every model spends the budget, up to half a step's FLOPs (steps are whole).
        step_flops = r["train_flops"] / r["steps"]
        assert abs(r["train_flops"] - budget) <= step_flops / 2 + 1e-6 * budget, name
        assert len(r["curve"]) >= 2 and r["curve"][-1]["step"] == r["steps"]
        assert math.isfinite(r["val_bpb"]) and 0 < r["val_bpb"] < 12
        assert r["train_bytes_per_s"] > 0
        # The trainer really took that many batches of that shape (so the FLOPs above are spent).
        run = tmp_path / "work" / "runs" / name
        state = json.loads(next((run / "checkpoints").glob("step_*/loader_rank0.json")).read_text())
        assert state["batches"] == r["steps"]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert (cfg["data"]["seq_len"], cfg["data"]["batch_size"], cfg["grad_acc_steps"]) == (r["seq_len"], 2, 1)
    assert result["models"]["aunet3"]["dimensions"].__len__() == 3
    assert 2.0 < result["bpe_bytes_per_token"] < 6.0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| AU-Net-3 |" in proc.stdout and "| BPE transformer |" in proc.stdout
    # A rerun reuses the finished runs instead of training again.
    again = run_in_session(cmd, 300)
    assert again.returncode == 0 and again.stdout.count("reusing the finished run") == 4
    # Exact: the rerun reads the finished run's stored result, it does not compute it again.
    assert json.loads(out.read_text())["models"]["bpe"]["val_bpb"] == result["models"]["bpe"]["val_bpb"]
    combined = subprocess.run([sys.executable, str(REPO_ROOT / "benches" / "compare.py"), "--combine", str(out),
                               "--plot", str(tmp_path / "budgets.png")], capture_output=True, text=True, timeout=300)
    assert combined.returncode == 0, combined.stderr
    assert f"| {budget:.0e} | {result['models']['aunet2']['val_bpb']:.3f} |" in combined.stdout
    assert (tmp_path / "budgets.png").read_bytes()[:4] == b"\x89PNG"
