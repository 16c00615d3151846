"""benches/gpu_check.py, the GPU acceptance run: its plumbing end to end on the CPU
(`--cpu-smoke`), and the pieces whose sizes matter on the GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO_ROOT, cpu_dist_env, run_in_session

sys.path.insert(0, str(REPO_ROOT / "benches"))
import gpu_check  # noqa: E402
from gpu_parts.install import install_from_wheelhouse  # noqa: E402
from gpu_parts.running import CheckFailed, check, optional_phase  # noqa: E402
from gpu_parts.throughput import equal_flops_target, flat_bench  # noqa: E402
from gpu_parts.train import train_model_args  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("gpu-check")
    # As the device tool runs it: no --out, results and logs under $OUT.
    out_dir = work / "out"
    out_dir.mkdir()
    proc = run_in_session([sys.executable, str(REPO_ROOT / "benches" / "gpu_check.py"), "--cpu-smoke",
                           "--workdir", str(work / "work")],
                          timeout=900, env={**cpu_dist_env(), "OUT": str(out_dir)}, cwd=REPO_ROOT)
    out = out_dir / "gpu_check.json"
    assert out.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["returncode"] = proc.returncode
    result["logs_under_out"] = sorted(p.name for p in (out_dir / "logs").glob("*.log"))
    return result


@pytest.mark.distributed
def test_cpu_smoke_runs_every_part_and_none_fails(smoke):
    assert list(smoke["parts"]) == list(gpu_check.PART_NAMES)
    failed = {name: part["error"] for name, part in smoke["parts"].items() if not part["ok"]}
    assert failed == {}
    assert smoke["returncode"] == 0 and smoke["mode"] == "cpu-smoke"


@pytest.mark.distributed
def test_cpu_smoke_training_resumes_from_its_checkpoint_and_serves_the_export(smoke):
    train, plan = smoke["parts"]["train"], gpu_check.SMOKE
    assert train["run1"]["logged_steps"][-1] == plan.steps
    # The rerun with more steps went on from the checkpoint instead of starting over.
    assert train["resumed"] is True
    assert train["first_resumed_step"] > plan.steps
    assert train["run2"]["logged_steps"][-1] == plan.resume_steps
    assert math.isfinite(train["eval"]["bpb"]) and train["eval"]["bytes"] > 0
    assert len(train["generate"]["sample"]) > len("def ")
    # The compiled run (block by block, dynamo's capture in the smoke run) trained to its end.
    assert train["compiled"]["backend"] == plan.compile_backend
    assert train["compiled"]["logged_steps"][-1] == plan.compiled_steps
    assert {"train.log", "resume.log", "compiled.log", "export.log"} <= set(smoke["logs_under_out"])


@pytest.mark.distributed
def test_cpu_smoke_generation_and_throughput_records(smoke):
    gen = smoke["parts"]["generation"]
    assert gen["cached_bf16_vs_fp32"]["max_abs"] <= 2 * gen["full_bf16_vs_fp32"]["max_abs"]
    assert 0 < gen["full_bf16_vs_fp32"]["max_abs"]  # bf16 really ran: it is not bit-exact
    steps = gen["stage_steps"]
    assert steps[0] > steps[1] > steps[2] > 0  # deeper stages step once per segment
    # Sampling speed: eager only on the CPU (CUDA graphs need CUDA), batch 1 and 32.
    assert [(r["batch"], r["cuda_graphs"]) for r in gen["decode"] if r["levels"] == "segmenter"] == [(1, False), (32, False)]
    assert all(r["bytes_per_s"] > 0 for r in gen["decode"])
    rows = [smoke["parts"][n] for n in ("throughput_aunet2", "throughput_bytes", "throughput_bpe")]
    assert all(r["bytes_per_s"] > 0 and r["batch"] in gpu_check.SMOKE.batches for r in rows)
    # AU-Net-2 runs the loader's bucketed stages: never more than the padded shapes, never less
    # than the real positions.
    assert rows[0]["batch_useful_flops_per_byte"] <= rows[0]["executed_flops_per_byte"] <= rows[0]["padded_flops_per_byte"]
    aunet2 = rows[0]["flops_per_byte"]
    assert all(abs(math.log(r["flops_per_byte"] / aunet2)) < 0.1 for r in rows[1:])
    assert set(smoke["ratios"]) == {"aunet2_over_bytes", "aunet2_over_bpe"}


def test_the_training_model_is_a_100m_aunet3_derived_from_the_1b_config():
    from aunet.config import load_config
    from aunet.model.flops import param_count

    cfg = train_model_args(gpu_check.GPU)
    big, _ = load_config(REPO_ROOT / "configs" / "aunet3_1b.yaml")
    assert 95e6 <= param_count(cfg.model) <= 105e6
    assert cfg.model.n_levels == 2 and cfg.data.regex.strategy == big.data.regex.strategy
    assert cfg.model.sliding_windows == big.model.sliding_windows and cfg.model.max_seqlens == big.model.max_seqlens
    assert cfg.data.seq_len == 8192 and cfg.distributed.zero == 3


def test_gpu_baselines_have_the_flops_per_byte_of_aunet2():
    from aunet.model.flops import flops_per_byte

    target, seq_len = equal_flops_target(gpu_check.Context(gpu_check.GPU, REPO_ROOT, REPO_ROOT))
    assert seq_len == 8192
    for bpe in (False, True):
        bench = flat_bench(gpu_check.GPU, target, seq_len, bpe=bpe)
        per_byte = flops_per_byte(bench.args, bench.seq_len).total / bench.bytes_per_position
        assert abs(per_byte / target - 1) < 0.03
        assert bench.args.n_levels == 0 and bench.args.head_dims == [128]
        assert bench.seq_len * bench.bytes_per_position == pytest.approx(seq_len, rel=0.01)
        assert bench.args.vocab_size == (gpu_check.GPU.bpe_vocab if bpe else 258)


def test_the_install_is_offline_and_retried_where_the_system_manages_python(tmp_path):
    calls = []

    def pip(cmd, **kw):
        calls.append(cmd)
        refused = len(calls) == 1
        return subprocess.CompletedProcess(cmd, 1 if refused else 0, "", "error: externally-managed-environment" if refused else "")

    used = install_from_wheelhouse(tmp_path, ["aunet", "deepspeed"], runner=pip)
    assert len(calls) == 2 and used == calls[1]
    assert all("--no-index" in c and c[c.index("--find-links") + 1] == str(tmp_path) for c in calls)
    assert "--break-system-packages" in calls[1] and "--break-system-packages" not in calls[0]
    assert calls[1][-2:] == ["aunet", "deepspeed"]

    def broken(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "No matching distribution found for zstandard")

    with pytest.raises(CheckFailed, match="zstandard"):
        install_from_wheelhouse(tmp_path, ["aunet"], runner=broken)


def test_a_failing_or_overrunning_part_is_recorded_and_the_run_goes_on(tmp_path):
    def ok(ctx, rec, budget):
        rec["value"] = 1

    def fails(ctx, rec, budget):
        rec["measured"] = 3.0
        check(False, "too slow")

    def hangs(ctx, rec, budget):
        time.sleep(30)

    parts = {"setup": ok, "a": fails, "b": hangs, "c": ok}
    ctx = gpu_check.Context(gpu_check.SMOKE, tmp_path, tmp_path, device=torch.device("cpu"))
    started = time.monotonic()
    results = gpu_check.run_parts(ctx, list(parts), parts, budgets={"b": 0.5})
    assert time.monotonic() - started < 10
    assert results["a"]["ok"] is False and "too slow" in results["a"]["error"] and results["a"]["measured"] == 3.0
    assert results["b"]["ok"] is False and "budget" in results["b"]["error"]
    assert results["c"] == {"ok": True, "budget_s": 60, "value": 1, "error": None, "seconds": results["c"]["seconds"]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_the_gpu_run_refuses_to_run_without_a_gpu(tmp_path, capsys):
    assert gpu_check.main(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_compile_that_runs_out_of_time_leaves_the_part_its_eager_figures(tmp_path):
    def compiles_forever(ctx, rec, budget):
        rec["bytes_per_s"] = 100.0  # the eager figure
        compiled = optional_phase(rec, "compiled", 0.5, lambda: time.sleep(30))
        rec["after"] = compiled

    def outer_still_counts(ctx, rec, budget):
        optional_phase(rec, "compiled", 0.2, lambda: time.sleep(30))
        time.sleep(30)  # the part's own budget (1 s) still ends it

    parts = {"setup": compiles_forever, "next": outer_still_counts}
    ctx = gpu_check.Context(gpu_check.SMOKE, tmp_path, tmp_path, device=torch.device("cpu"))
    started = time.monotonic()
    results = gpu_check.run_parts(ctx, list(parts), parts, budgets={"setup": 5, "next": 1})
    assert time.monotonic() - started < 10
    first = results["setup"]
    assert first["ok"] is True and first["bytes_per_s"] == 100.0 and first["after"] is None
    assert "ran out of time" in first["compiled"]
    assert results["next"]["ok"] is False and "over its 1 s budget" in results["next"]["error"]


def test_the_gpu_plan_fits_in_8_minutes_and_compiles_training_block_by_block():
    # Eight minutes less 15 s for the interpreter, imports and the tables.
    assert sum(gpu_check.GPU.budgets.values()) <= 8 * 60 - 15
    assert set(gpu_check.GPU.budgets) == set(gpu_check.PART_NAMES)
    assert gpu_check.GPU.compile_training and gpu_check.GPU.compile_backend == "inductor"
