"""Cluster settings (issue 26, item 5): ZeRO-2 through `shard_grad_op`, bucket sizes for
multi-node runs, fp32 gradient reduction, rank 0 deciding the checkpoint to resume, and the
segmentation barrier on a gloo group of its own. The checkpoint tests start from one shared
ZeRO-2 run (each launch costs tens of seconds of this 2-core machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from aunet import segment_corpus
from aunet.config import ConfigError, load_config
from aunet.model.flops import block_params, param_count
from aunet.training.checkpoint import complete_steps
from aunet.training.ds_config import MAX_BUCKET, MIN_BUCKET, deepspeed_config, largest_parameter, zero_config
from helpers import REPO_ROOT, run_deepspeed
from segment_fixtures import STRATEGY, sample_texts, write_jsonl

REPORT = REPO_ROOT / "tests" / "distributed" / "trainer_report.py"
TINY = REPO_ROOT / "configs" / "tiny_aunet3.yaml"


def test_zero_buckets_default_to_one_block_of_the_widest_stage():
    for name, block in (("aunet2_1b.yaml", 51_384_320), ("aunet3_1b.yaml", 143_334_144)):
        cfg, _ = load_config(REPO_ROOT / "configs" / name)
        d = max(cfg.model.dimensions)
        zero = zero_config(cfg)
        assert block_params(cfg.model, cfg.model.dimensions.index(d)) == block
        # Reduce buckets of tens of millions of elements, one block of gradients each.
        assert zero["reduce_bucket_size"] == zero["stage3_prefetch_bucket_size"] == block
        assert 10**7 < block < MAX_BUCKET
        # The prefetch holds more than one trunk FFN matrix (dim x SwiGLU hidden).
        assert zero["stage3_prefetch_bucket_size"] > d * cfg.model.block.ffn_hidden(d)
    # A small model keeps the floor, so its step is not split into hundreds of collectives.
    tiny, _ = load_config(TINY)
    assert zero_config(tiny)["reduce_bucket_size"] == MIN_BUCKET


def test_a_transition_larger_than_a_block_sets_the_bucket():
    """16 offset maps of 1024 x 1024 (16.8M elements) outweigh a 1024-wide block (12.9M): the
    bucket must hold the largest parameter, or it would be gathered in pieces."""
    cfg, _ = load_config(TINY, ["model.dimensions=[1024,1024]", "model.layers=[1,1]", "model.head_dims=[64,64]",
                                "model.residuals=[true]", "model.sliding_windows=[128,128]", "model.max_seqlens=[-1,-1]",
                                "data.regex.strategy={word1: 1@1}"])
    assert largest_parameter(cfg.model) == 16 * 1024 * 1024 > block_params(cfg.model, 1)
    assert zero_config(cfg)["reduce_bucket_size"] == 16 * 1024 * 1024


def test_shard_grad_op_is_zero_2_without_zero_3_settings():
    cfg, _ = load_config(TINY, ["distributed.fsdp_type=shard_grad_op"])
    zero = zero_config(cfg)
    assert zero["stage"] == 2 and not any(k.startswith("stage3_") for k in zero)
    default, _ = load_config(TINY)
    assert zero_config(default)["stage"] == 3  # full_shard stays the default


def test_fp32_gradient_reduction_is_deepspeeds_communication_data_type():
    from aunet.training.accelerator import ensure_ds_accelerator

    ensure_ds_accelerator()
    from deepspeed.runtime.config import DeepSpeedConfig

    for flag, expected in (("true", torch.float32), ("false", None)):
        cfg, _ = load_config(TINY, [f"distributed.fp32_grad_reduce={flag}"])
        ds = deepspeed_config(cfg, on_gpu=True)
        assert ds.get("communication_data_type") == ("fp32" if flag == "true" else None)
        # DeepSpeed's own parser reads it (None: reduce in the training dtype, bf16 here).
        assert DeepSpeedConfig(ds).communication_data_type == expected


def test_zero3_blocks_are_leaf_modules_on_cpus_and_when_compiled():
    """One gather hook per transformer block (none inside it) where nothing could overlap finer
    gathers (CPUs) or a block must stay one compiled graph; eager GPU runs and other stages keep
    DeepSpeed's per-module hooks."""
    from aunet.training.accelerator import ensure_ds_accelerator

    ensure_ds_accelerator()
    from deepspeed.utils import z3_leaf_module

    from aunet.model import HierarchicalTransformer
    from aunet.model.layers import Block
    from aunet.training.trainer import leaf_blocks

    cfg, _ = load_config(TINY)
    for stage, compiled, on_gpu, expected in ((3, False, False, True), (3, True, True, True), (3, False, True, False),
                                              (2, False, False, False), (2, True, True, False)):
        with torch.device("meta"):
            model = HierarchicalTransformer(cfg.model)
        assert leaf_blocks(model, stage, compiled, on_gpu) == expected
        blocks = [m for m in model.modules() if isinstance(m, Block)]
        assert len(blocks) == sum(cfg.model.layers) + sum(cfg.model.layers[:-1])  # encoder and decoder blocks
        assert {z3_leaf_module(m) for m in blocks} == {expected}
        assert not any(z3_leaf_module(m) for m in model.modules() if not isinstance(m, Block))


def test_segment_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="segment_timeout_minutes"):
        load_config(TINY, ["distributed.segment_timeout_minutes=0"])


# ---------------------------------------------------------------- 2 ranks


def launch(out: Path, *args: str, output: list[str] | None = None) -> list[dict]:
    """Each rank's report of `trainer_report.py`; the launcher's output is appended to `output`."""
    out.mkdir(parents=True, exist_ok=True)
    proc = run_deepspeed(REPORT, "--out", str(out), "--config", str(TINY), *args, ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    if output is not None:
        output.append(proc.stdout + proc.stderr)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def run_args(root: Path, dump: Path, steps: int, source: str = "train") -> list[str]:
    return [f"data.root_dir={root}", f"data.sources={{{source}: 1.0}}", f"dump_dir={dump}", f"steps={steps}",
            "data.seq_len=128", "data.batch_size=2", "model.max_seqlens=[-1,64,48]", "logging.freq=1",
            "checkpoint.dump.every=2", "optim.warmup=2", "distributed.fsdp_type=shard_grad_op",
            "distributed.fp32_grad_reduce=true"]


def losses(dump: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.fixture(scope="module")
def zero2(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """(data root, dump dir, rank reports) of a 4-step ZeRO-2 run, saved at 2 and 4. Its shards
    are made beforehand: a loader state names its shard directories, and raw text would be
    segmented under the dump directory, which the tests copy."""
    root = tmp_path_factory.mktemp("zero2")
    write_jsonl(root / "a.jsonl", sample_texts(400, seed=3))
    segment_corpus(root / "a.jsonl", root / "train", STRATEGY)
    dump = root / "run"
    return root, dump, launch(root / "out", *run_args(root, dump, 4))


@pytest.mark.distributed
def test_shard_grad_op_trains_at_zero_stage_2(zero2):
    _, dump, reports = zero2
    cfg, _ = load_config(dump / "config.yaml")
    assert [r["zero_stage"] for r in reports] == [2, 2]
    # Built without zero.Init: every rank holds the whole model, no parameter is partitioned.
    assert [(r["partitioned_params"], r["local_elements"]) for r in reports] == [(0, param_count(cfg.model))] * 2
    # DeepSpeed takes fp32 gradient reduction at stage 2 (on the CPU it trains in fp32 anyway).
    assert [r["communication_data_type"] for r in reports] == ["torch.float32"] * 2
    assert [r["final_step"] for r in reports] == [4, 4]
    for step in (2, 4):
        assert json.loads((dump / "checkpoints" / f"step_{step:08d}" / "COMPLETE.json").read_text())["zero_stage"] == 2
    assert sorted(losses(dump)) == [1, 2, 3, 4] and all(0 < v < 10 for v in losses(dump).values())


@pytest.mark.distributed
def test_raw_text_segmentation_waits_on_its_own_gloo_group_with_the_configured_timeout(tmp_path):
    (tmp_path / "raw").mkdir()
    write_jsonl(tmp_path / "raw" / "part0.jsonl", sample_texts(100, seed=3))
    write_jsonl(tmp_path / "raw" / "part1.jsonl", sample_texts(100, seed=4))
    reports = launch(tmp_path / "out", "--no-train", *run_args(tmp_path, tmp_path / "run", 2, source="raw"),
                     "distributed.segment_timeout_minutes=90")
    assert (tmp_path / "run" / "segmented" / "data" / "raw" / "manifest.json").is_file()
    for r in reports:
        # Two barriers (after the ranks' shares, after rank 0's merge) on a gloo group that is
        # not the training group, with distributed.segment_timeout_minutes = 90.
        assert r["segmentation"] == {"backend": "gloo", "timeout_s": 90 * 60.0, "is_default_group": False, "calls": 2}


@pytest.mark.distributed
def test_zero2_resumes_exactly_and_exports(zero2, tmp_path):
    from aunet.model import HierarchicalTransformer
    from aunet.training.consolidate import export_checkpoint
    from safetensors.torch import load_file

    root, straight, _ = zero2
    resumed = tmp_path / "run"
    shutil.copytree(straight, resumed, symlinks=True)
    shutil.rmtree(resumed / "checkpoints" / "step_00000004")
    (resumed / "metrics.jsonl").write_text("")
    reports = launch(tmp_path / "out", *run_args(root, resumed, 4))
    assert [r["resumed_step"] for r in reports] == [2, 2] and [r["final_step"] for r in reports] == [4, 4]
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == [3, 4]
    for step in (3, 4):  # same batches, same state: equal up to float rounding
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-6), step
    # `aunet export` of a ZeRO-2 checkpoint: the whole model, and the resumed run's weights
    # equal the straight run's.
    exported = [load_file(export_checkpoint(run / "checkpoints", tmp_path / f"export{i}")) for i, run in enumerate((straight, resumed))]
    cfg, _ = load_config(straight / "config.yaml")
    expected = HierarchicalTransformer(cfg.model).state_dict()
    assert {k: v.shape for k, v in exported[0].items()} == {k: v.shape for k, v in expected.items()}
    for name, tensor in exported[0].items():
        torch.testing.assert_close(exported[1][name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.distributed
def test_rank_0_decides_which_checkpoint_every_rank_resumes_from(zero2, tmp_path):
    """Rank 1's view of the checkpoint directory lists a step_6 that rank 0's does not (links
    to step 4's files: a listing that is not the truth). Every rank must resume from rank 0's
    newest, step 4; a rank choosing from its own listing would take step 6."""
    root, straight, _ = zero2
    run = tmp_path / "run"
    shutil.copytree(straight, run, symlinks=True)
    view = tmp_path / "rank1_view"
    view.mkdir()
    for name, target in (("step_00000002", "step_00000002"), ("step_00000004", "step_00000004"),
                         ("step_00000006", "step_00000004")):
        (view / name).symlink_to(run / "checkpoints" / target, target_is_directory=True)
    assert complete_steps(run / "checkpoints") == [2, 4] and complete_steps(view) == [2, 4, 6]  # the listings differ
    reports = launch(tmp_path / "out", "--rank1-checkpoints", str(view), "--no-train", *run_args(root, run, 8))
    for r in reports:
        assert r["candidates"] == [2, 4]
        assert r["resumed_step"] == 4 and r["engine_global_steps"] == 4, r


@pytest.mark.distributed
def test_a_rank_that_cannot_see_rank_0s_choice_makes_every_rank_fall_back(zero2, tmp_path):
    """Rank 1's view lacks step 4, which rank 0 lists: rank 1 reports its marker unreadable and
    both ranks resume from step 2 together."""
    root, straight, _ = zero2
    run = tmp_path / "run"
    shutil.copytree(straight, run, symlinks=True)
    view = tmp_path / "rank1_view"
    view.mkdir()
    (view / "step_00000002").symlink_to(run / "checkpoints" / "step_00000002", target_is_directory=True)
    output: list[str] = []
    reports = launch(tmp_path / "out", "--rank1-checkpoints", str(view), "--no-train", *run_args(root, run, 8), output=output)
    for r in reports:
        assert r["candidates"] == [2, 4]
        assert r["resumed_step"] == 2 and r["engine_global_steps"] == 2, r
    assert "rank 1: checkpoint" in output[0] and "unreadable on this rank" in output[0]


def test_resuming_a_checkpoint_of_another_zero_stage_stops_naming_both(tmp_path):
    from aunet.training.resume import ResumeError, check_same_run

    step = tmp_path / "step_00000002"
    step.mkdir()
    (step / "COMPLETE.json").write_text(json.dumps({"step": 2, "files": {}, "world_size": 2, "zero_stage": 3}))
    cfg, _ = load_config(TINY, ["distributed.fsdp_type=shard_grad_op"])
    with pytest.raises(ResumeError, match="written at ZeRO stage 3, this run is at stage 2"):
        check_same_run(step, cfg, 2)
    full, _ = load_config(TINY)
    check_same_run(step, full, 2)  # the same stage resumes
