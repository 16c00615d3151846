"""`checkpoint.init_ckpt_path`: a new run takes its weights from an `aunet export` directory or
from another run's training checkpoint (2 CPU ranks under ZeRO-3, and 1 rank reading a 2-rank
checkpoint); its optimizer, schedule and data position start fresh; a run's own checkpoint wins;
sources that do not fit the model are refused with the path and the differing keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO_ROOT, communicate_or_kill, cpu_dist_env, deepspeed_cmd, free_port
from train_run import CONFIG, TRAIN, loader_states, metrics, overrides, rank_batch, run

# Runs the trainer and, right after `deepspeed.initialize`, writes rank 0's view of the whole
# model twice: the module's parameters (gathered) and the optimizer's fp32 master copies (what
# the first step updates). Test-only instrumentation, from outside the production code.
INSPECT = '''
import os, sys
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator

ensure_ds_accelerator()
import deepspeed
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param
from safetensors.torch import save_file

real_initialize = deepspeed.initialize


def initialize(*args, **kwargs):
    out = real_initialize(*args, **kwargs)
    params, masters = {}, {}
    for name, p in out[0].module.named_parameters():
        masters[name] = safe_get_full_fp32_param(p).detach().cpu().clone()
        with deepspeed.zero.GatheredParameters([p]):
            params[name] = p.data.detach().cpu().clone()
    if dist.get_rank() == 0:
        where = Path(os.environ["AUNET_TEST_INIT_WEIGHTS"])
        save_file(params, str(where / "params.safetensors"))
        save_file(masters, str(where / "masters.safetensors"))
    return out


deepspeed.initialize = initialize

# Count, per rank, the source tensors read and how many of them are alive at once.
import contextlib, json, weakref

import aunet.training.init_weights as init_weights

real_open = init_weights.open_tensors


@contextlib.contextmanager
def open_tensors(source):
    seen = {"reads": 0, "live": 0, "max_live": 0}

    def gone():
        seen["live"] -= 1

    def read_one(name):
        tensor = read(name)
        seen["reads"] += 1
        seen["live"] += 1
        seen["max_live"] = max(seen["max_live"], seen["live"])
        weakref.finalize(tensor, gone)
        return tensor

    with real_open(source) as (shapes, read):
        yield shapes, read_one
    where = Path(os.environ["AUNET_TEST_INIT_WEIGHTS"])
    (where / f"reads_rank{dist.get_rank()}.json").write_text(json.dumps(seen))


init_weights.open_tensors = open_tensors
from aunet.train import main

sys.exit(main())
'''


# The source of every test here: the session's 2-rank run of 6 steps (checkpoints at steps 2, 4
# and 6) and its export of step 6 (tests/conftest.py: trained_run, trained_export).


def inspected_run(tmp_path: Path, args: list[str], ranks: int = 2) -> tuple[str, Path]:
    """Train through INSPECT; returns the output and the folder holding the weights it saw."""
    script = tmp_path / "inspect_init.py"
    script.write_text(INSPECT)
    weights = tmp_path / "init-weights"
    weights.mkdir(exist_ok=True)
    env = {**cpu_dist_env(), "AUNET_TEST_INIT_WEIGHTS": str(weights)}
    if ranks == 1:
        cmd = [sys.executable, str(script), "--config", CONFIG, *args]
        env["MASTER_PORT"] = str(free_port())
    else:
        cmd = deepspeed_cmd(script, "--config", CONFIG, *args, ranks=ranks)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, _ = communicate_or_kill(proc, 600)
    assert proc.returncode == 0, out[-4000:]
    return out, weights


def assert_weights(weights: Path, expected: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import load_file

    for kind in ("params", "masters"):
        got = load_file(str(weights / f"{kind}.safetensors"))
        assert sorted(got) == sorted(expected), kind
        # Exact: loading copies the stored floats, it computes nothing.
        differing = [k for k in expected if not torch.equal(got[k], expected[k].to(got[k].dtype))]
        assert not differing, (kind, differing[:5])


def assert_read_once_by_rank_0(weights: Path, ranks: int, tensors: int) -> None:
    """Rank 0 read every tensor once, one at a time; the other ranks read none (ZeRO-3: no rank
    holds the whole model)."""
    reads = [json.loads((weights / f"reads_rank{r}.json").read_text()) for r in range(ranks)]
    assert reads[0]["reads"] == tensors and reads[0]["max_live"] == 1, reads
    assert all(r["reads"] == 0 for r in reads[1:]), reads


def adam_steps(dump: Path, step: int) -> int:
    """The optimizer's own step count in rank 0's optimizer file of checkpoint `step` (our own
    test output, so loading the pickle is fine)."""
    f = dump / "checkpoints" / f"step_{step:08d}" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = torch.load(f, weights_only=False, mmap=True)["optimizer_state_dict"]["optimizer_state_dict"]["state"]
    return {int(s["step"]) for s in state.values()}.pop()


def exported(export: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(export / "model.safetensors"))


@pytest.mark.distributed
def test_init_from_an_export_loads_its_weights_and_starts_fresh(tmp_path, data_root, trained_run, trained_export):
    from aunet.inference.export import load_model
    from aunet.training.lr_schedule import lr_factor

    dump = tmp_path / "run"
    args = [*overrides(data_root, dump, 6), f"checkpoint.init_ckpt_path={trained_export}"]
    out, weights = inspected_run(tmp_path, ["--stop-at", "2", *args])
    assert "resumed from" not in out
    assert f"initialised the weights from {trained_export}" in out
    assert_weights(weights, exported(trained_export))
    assert_read_once_by_rank_0(weights, 2, len(exported(trained_export)))
    # A fresh step counter and schedule: steps 1 and 2, at a 6-step run's learning rates.
    m = metrics(dump)
    assert sorted(m) == [1, 2]
    for step in (1, 2):
        assert m[step]["lr"] == pytest.approx(3e-3 * lr_factor(step, 2, 6, 0.1), rel=1e-12)
    # Step 1's loss is the export's loss on each rank's first batch: the loaded weights are the
    # ones trained on, and the data starts at the beginning.
    model, cfg = load_model(trained_export)
    losses = []
    for rank in range(2):
        b = rank_batch(data_root, cfg, rank)
        with torch.no_grad():
            losses.append(float(model(b["tokens"], b["levels"], b["targets"], b["target_levels"], b["target_bytes"])[1]))
    # 1e-6: one process and one rank's batch at a time against two ranks' mean, the same maths
    # summed in other orders; other weights or another batch move the loss by far more.
    assert abs(m[1]["loss"] - sum(losses) / 2) <= 1e-6, (m[1]["loss"], losses)
    # The data position after 2 steps is a fresh run's (the source run's at its step 2) ...
    assert loader_states(dump, 2) == loader_states(trained_run, 2)
    # ... and so is the optimizer's step count.
    assert adam_steps(dump, 2) == 2
    # The run's own checkpoint wins over init_ckpt_path, and the log says so.
    out = run(["--stop-at", "3", *args])
    assert f"resumed from {dump / 'checkpoints' / 'step_00000002'}" in out
    assert f"checkpoint.init_ckpt_path={trained_export} not used" in out
    assert max(metrics(dump)) == 3


@pytest.mark.distributed
def test_init_from_a_checkpoint_root_takes_its_newest_complete_step(tmp_path, data_root, trained_run, trained_export):
    dump = tmp_path / "run"
    out, weights = inspected_run(tmp_path, ["--stop-at", "1", *overrides(data_root, dump, 6),
                                            f"checkpoint.init_ckpt_path={trained_run / 'checkpoints'}"])
    assert f"initialised the weights from {trained_run / 'checkpoints' / 'step_00000006'}" in out
    assert_weights(weights, exported(trained_export))  # the export is of step 6 too
    assert_read_once_by_rank_0(weights, 2, len(exported(trained_export)))
    assert sorted(metrics(dump)) == [1]
    assert adam_steps(dump, 1) == 1  # not the source's 7


@pytest.mark.distributed
def test_init_from_one_step_directory_on_another_number_of_ranks(tmp_path, data_root, trained_run, trained_export):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    step2 = trained_run / "checkpoints" / "step_00000002"
    dump = tmp_path / "run"
    out, weights = inspected_run(tmp_path, ["--stop-at", "1", *overrides(data_root, dump, 6), f"checkpoint.init_ckpt_path={step2}"],
                                 ranks=1)
    assert f"initialised the weights from {step2}" in out
    assert_weights(weights, get_fp32_state_dict_from_zero_checkpoint(str(trained_run / "checkpoints"), tag=step2.name))
    assert sorted(metrics(dump)) == [1]


@pytest.mark.distributed
def test_a_mismatching_model_config_is_refused_before_training(tmp_path, data_root, trained_run, trained_export):
    dump = tmp_path / "run"
    env = {**cpu_dist_env(), "MASTER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, TRAIN, "--config", CONFIG, *overrides(data_root, dump, 1), "model.dimensions=[48,64,128]",
                           f"checkpoint.init_ckpt_path={trained_export}"], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=300)
    assert proc.returncode != 0
    assert f"checkpoint.init_ckpt_path: {trained_export}" in proc.stderr, proc.stderr[-3000:]
    assert "model.dimensions" in proc.stderr and "[48, 64, 128]" in proc.stderr and "[48, 64, 96]" in proc.stderr
    assert not (dump / "metrics.jsonl").exists()


def run_config(data_root: Path, *extra: str):
    from aunet.config import load_config

    return load_config(CONFIG, [f"data.root_dir={data_root}", "model.max_seqlens=[-1,64,48]", *extra])[0]


@pytest.mark.distributed
def test_sources_that_do_not_fit_are_refused_naming_path_and_keys(tmp_path, data_root, trained_run, trained_export):
    from aunet.training.init_weights import InitCheckpointError, resolve

    cfg = run_config(data_root)
    with pytest.raises(InitCheckpointError, match=f"{tmp_path / 'nowhere'}: does not exist"):
        resolve(tmp_path / "nowhere", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitCheckpointError, match="neither an `aunet export` directory"):
        resolve(tmp_path / "empty", cfg)
    partial = tmp_path / "ckpt" / "step_00000009"
    partial.mkdir(parents=True)
    (partial / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x")
    with pytest.raises(InitCheckpointError, match="not a complete checkpoint"):
        resolve(partial, cfg)
    with pytest.raises(InitCheckpointError, match="no complete checkpoint"):
        resolve(tmp_path / "ckpt", cfg)
    with pytest.raises(InitCheckpointError, match=r"model.layers: \[1, 2, 2\] in this run, \[1, 1, 2\] in the source; "
                                                  r"model.pooling_type"):
        resolve(trained_export, run_config(data_root, "model.layers=[1,2,2]", "model.pooling_type=simple_repeat"))
    with pytest.raises(InitCheckpointError, match=r"segmentation strategy: \[word 1@1, word 3@1\] in this run .*\[word 1@1, word 2@1\] in the source"):
        resolve(trained_run / "checkpoints", run_config(data_root, "data.regex.strategy.word2=3@1"))
    # Initialisation-only keys (the init seed) may differ; a spelling of the same strategy too.
    src = resolve(trained_export / "model.safetensors", run_config(data_root, "model.seed=5",
                                                                       "data.regex.strategy={word_a: ' 1@1', word_b: 2@1}"))
    assert src.kind == "export" and src.step == 6
    assert resolve(trained_run / "checkpoints", cfg).step == 6
