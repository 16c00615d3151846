"""What a GPU cluster needs from the trainer, proved on the CPU (SPEC section 6): no host
synchronisation in a training step, collectives only on the model's device, ZeRO-3
partitioning from construction with weights independent of the number of ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aunet import segment_corpus
from aunet.config import load_config
from aunet.model.flops import block_params
from aunet.training.metrics import DeviceMetrics
from aunet.training.ds_config import MIN_BUCKET, deepspeed_config, zero_config
from helpers import REPO_ROOT, run_deepspeed
from segment_fixtures import STRATEGY, sample_texts, write_jsonl

SCRIPTS = REPO_ROOT / "tests" / "distributed"
CONFIG = REPO_ROOT / "configs" / "tiny_aunet3.yaml"


def reports(out: Path, ranks: int) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def test_device_metrics_hand_the_collective_a_tensor_on_their_device():
    seen = []
    m = DeviceMetrics("meta")
    for _ in range(3):
        t = torch.ones((), device="meta")
        m.add(t, t, t, torch.ones(4, 8, dtype=torch.int32, device="meta"), tokens=32)
    totals = m.reduced(lambda x: seen.append(x.device))
    assert seen == [torch.device("meta")] and totals.device.type == "meta" and totals.dtype == torch.float64
    assert (m.micro_steps, m.tokens) == (3, 96)


def test_zero_buckets_scale_with_the_widest_block_and_keep_norms_whole():
    wide = ["model.dimensions=[1024,4096]", "model.layers=[1,1]", "model.head_dims=[64,128]", "model.residuals=[true]",
            "model.sliding_windows=[128,128]", "model.max_seqlens=[-1,-1]", "data.regex.strategy={word1: 1@1}"]
    for dims, overrides in (([48, 64, 96], []), ([1024, 4096], wide)):
        cfg, _ = load_config(CONFIG, overrides)
        assert cfg.model.dimensions == dims
        hidden = max(dims)
        zero = zero_config(cfg)
        # Buckets of one block of the widest stage (tests/test_cluster_settings.py), never so
        # small that a small model splits its step into hundreds of collectives.
        bucket = max(block_params(cfg.model, len(dims) - 1), MIN_BUCKET)
        assert zero["reduce_bucket_size"] == bucket and zero["stage3_prefetch_bucket_size"] == bucket
        # Norm weights (hidden elements) stay whole on every rank; square matrices are partitioned.
        assert hidden <= zero["stage3_param_persistence_threshold"] < hidden**2
    cfg, _ = load_config(CONFIG, ["distributed.zero_param_persistence_threshold=0", "distributed.zero_reduce_bucket_size=1000",
                                  "distributed.zero_max_live_parameters=5000000"])
    zero = deepspeed_config(cfg, on_gpu=False)["zero_optimization"]
    assert (zero["stage3_param_persistence_threshold"], zero["reduce_bucket_size"], zero["stage3_max_live_parameters"]) == (0, 1000, 5000000)
    cfg, _ = load_config(CONFIG, ["distributed.fsdp_type=shard_grad_op"])
    assert "stage3_param_persistence_threshold" not in zero_config(cfg)


def test_gpu_runs_use_torchs_fused_adamw_not_a_jit_compiled_op():
    cfg, _ = load_config(CONFIG)
    gpu, cpu = (deepspeed_config(cfg, on_gpu=flag)["optimizer"]["params"] for flag in (True, False))
    assert gpu["torch_adam"] and gpu["fused"]  # FusedAdam would need nvcc on the GPU machine
    assert cpu["torch_adam"] and "fused" not in cpu


#: Where DeepSpeed 0.19 reads the device from the host inside a training step ('file function').
DEEPSPEED_HOST_READS = {
    "runtime/utils.py is_invalid_grad_norm",
    "runtime/zero/stage3.py step_with_gradscaler",
    "runtime/zero/utils.py assert_lst_len_same_as_other_ranks",
    "runtime/zero/utils.py get_lst_from_rank0",
    "runtime/zero/utils.py <listcomp>",
}


@pytest.mark.distributed
def test_a_training_step_has_no_host_sync_and_collectives_stay_on_the_device(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(600))
    segment_corpus(tmp_path / "a.jsonl", tmp_path / "data" / "train", STRATEGY)
    write_jsonl(tmp_path / "b.jsonl", sample_texts(60, seed=5))
    segment_corpus(tmp_path / "b.jsonl", tmp_path / "data" / "heldout", STRATEGY)
    out = tmp_path / "out"
    out.mkdir()
    overrides = [f"data.root_dir={tmp_path / 'data'}", "data.sources={train: 1.0}", "eval.validation.sources={heldout: 1.0}",
                 f"dump_dir={tmp_path / 'run'}", "steps=4", "grad_acc_steps=2", "logging.freq=2", "checkpoint.eval.every=2",
                 "checkpoint.dump.every=100", "data.seq_len=128", "data.batch_size=2", "model.max_seqlens=[-1,64,48]"]
    proc = run_deepspeed(SCRIPTS / "count_host_syncs.py", "--out", str(out), *overrides, ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in reports(out, 2):
        assert rank["micro_steps"] == 8
        ours = {k: v for k, v in rank["syncs"].items() if k.startswith("aunet:")}
        assert ours == {}, rank["ours_at"]
        # No device synchronisation inside a step, DeepSpeed's included (its throughput timer
        # synchronises at every step's start and end unless switched off).
        assert rank["device_syncs"] == {}, rank["device_syncs"]
        # DeepSpeed's own host reads are the ones docs/training.md names, no others: ZeRO-3's check
        # of the gradient norm (one per optimizer step), torch's unfused AdamW reading its step
        # count (CPU only; the fused CUDA kernel keeps it on the device) and, in the first
        # steps only, ZeRO-3's cross-rank check of the parameter trace it records.
        assert set(rank["deepspeed_at"]) <= DEEPSPEED_HOST_READS, rank["deepspeed_at"]
        assert rank["deepspeed_at"]["runtime/utils.py is_invalid_grad_norm"] == 4
        # Logging (2 steps: the bad-step counters' MAX, then the sums) and validation (2 runs:
        # steps MAX, then the sums) all-reduce.
        assert len(rank["collectives"]) == 2 * 2 + 2 * 2
        assert {c["device"] for c in rank["collectives"]} == {rank["device"]}
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "bpb" in r] == [2, 4] and all(0 < r["bpb"] < 12 for r in logged if "bpb" in r)
    assert [r["step"] for r in logged if "val_bpb" in r] == [2, 4]


@pytest.mark.distributed
def test_zero3_compiles_block_by_block_without_graph_breaks_or_host_syncs(tmp_path):
    """`distributed.compile` under ZeRO-3 on 2 ranks: each block (a DeepSpeed leaf module) is
    one graph, compiled once per stage length it meets (aot_eager: dynamo and AOTAutograd as on
    a GPU, without generating kernels on this CPU), and the step stays free of host reads."""
    from aunet.model.compile import compile_shapes

    write_jsonl(tmp_path / "a.jsonl", sample_texts(300))
    segment_corpus(tmp_path / "a.jsonl", tmp_path / "data" / "train", STRATEGY)
    out = tmp_path / "out"
    out.mkdir()
    overrides = [f"data.root_dir={tmp_path / 'data'}", "data.sources={train: 1.0}", f"dump_dir={tmp_path / 'run'}", "steps=4",
                 "logging.freq=2", "checkpoint.dump.every=100", "data.seq_len=128", "data.batch_size=2",
                 "model.max_seqlens=[-1,64,48]", "model.stage_bucket=16", "distributed.compile=true",
                 "distributed.compile_backend=aot_eager"]
    proc = run_deepspeed(SCRIPTS / "count_host_syncs.py", "--out", str(out), *overrides, ranks=2, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", overrides)
    for rank in reports(out, 2):
        assert rank["dynamo"]["graph_breaks"] == {}
        assert 3 <= rank["dynamo"]["unique_graphs"] <= compile_shapes(cfg.model, 128)
        assert {k: v for k, v in rank["syncs"].items() if k.startswith("aunet:")} == {}, rank["ours_at"]
        assert rank["device_syncs"] == {}


@pytest.mark.distributed
def test_zero3_construction_partitions_a_300m_model_and_weights_do_not_depend_on_the_ranks(tmp_path, monkeypatch):
    # The peak RSS should count live tensors: glibc serves blocks below its dynamic mmap
    # threshold (which climbs to 32 MiB as large blocks are freed) from the heap, whose freed
    # pages stay resident, so the full-size weights each module frees once ZeRO has partitioned
    # them would count again and again. With every block of 1 MiB or more mapped, a freed
    # weight leaves the RSS (measured: 0.83-0.87 of a full copy before the projections were
    # fused, 1.02-1.08 after, 0.71 with this setting; the partitions are 0.5).
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    one, two = tmp_path / "w1", tmp_path / "w2"
    one.mkdir(), two.mkdir()
    # The ~300M model is built once, by the 2-rank run (--big): its size is what the memory
    # claim is about. Whether weights depend on the ranks does not depend on the size: the
    # tiny model, built by both runs (and without ZeRO by the 1-rank run), answers that.
    for out, ranks, extra in ((one, 1, ["--plain"]), (two, 2, ["--big"])):
        proc = run_deepspeed(SCRIPTS / "zero3_construction.py", "--out", str(out), *extra, ranks=ranks, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (single,), pair = reports(one, 1), reports(two, 2)
    full = pair[0]["big"]["model_elements"]
    assert 280e6 < full < 340e6
    full_bytes = 4 * full
    for rank in pair:
        big = rank["big"]
        assert big["model_elements"] == full
        assert abs(big["partition_elements"] / full - 0.5) < 0.01
        # Each module is partitioned as soon as it is built: the peak never nears a full copy.
        assert big["rss_growth_bytes"] < 0.9 * full_bytes, big["rss_growth_bytes"] / full_bytes
    tiny = single["model_elements"]
    assert single["partition_elements"] == tiny
    for rank in pair:  # the tiny model is partitioned too, so its gathered digest tests ZeRO's init
        assert rank["model_elements"] == tiny and rank["partitioned"] > 0 and rank["partition_elements"] < tiny
    # Digests of the bytes, compared exactly across processes: initialisation computes each
    # weight elementwise (seeded draws, then a scale) with no sum over other elements, from the
    # same seed in the same shapes, one thread per rank, so nothing can round another way; a
    # weight drawn from another stream or place differs entirely.
    assert single["digest"] == pair[0]["digest"] == single["plain_digest"]
