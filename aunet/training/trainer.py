"""The training loop under DeepSpeed (ZeRO-3 by default): the same code on a 2-core CPU box and
on GPU clusters (SPEC section 6).

Per optimizer step: set the learning rate (warmup + cosine), run `grad_acc_steps` micro-batches
through the engine, step. Every `logging.freq` steps rank 0 logs loss, bpb, lr, grad norm,
bytes/s and estimated MFU to the console and to `<dump_dir>/metrics.jsonl`. Every
`checkpoint.dump.every` steps the DeepSpeed state and every rank's loader state go to
`<checkpoint dir>/step_N/`, marked complete only once all ranks are done (`aunet.training.checkpoint`);
a rerun of the same command resumes from the newest complete checkpoint that passes its checks
(`aunet.training.resume`), batch for batch. A run whose loss or gradient norm stays non-finite
for `optim.max_bad_steps` steps stops at the next logging or checkpoint step, saving nothing.
A run without a checkpoint of its own may start from other weights (`checkpoint.init_ckpt_path`,
`aunet.training.init_weights`): the weights only, with a fresh optimizer, schedule and data.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from pathlib import Path

from aunet.config import TrainArgs, to_dict
from aunet.training.accelerator import ensure_ds_accelerator, init_distributed
from aunet.training.checkpoint import checksum_share, latest_complete, mark_complete, prune, tag_for
from aunet.training.lr_schedule import lr_factor
from aunet.training.metrics import FIELDS, DeviceMetrics

# Peak dense bf16 FLOP/s used for MFU on GPUs; on a CPU the figure is only indicative.
PEAK_FLOPS = {"cuda": 989e12, "cpu": 1e12}


def resolve_sources(cfg: TrainArgs, key: str = "data.sources") -> list[tuple[str, Path, float, list[str] | None]]:
    """Each source of `data.sources` (or `eval.validation.sources`), under data.root_dir, as
    (name, path, weight, raw inputs): raw inputs is None for a shard directory made by
    aunet-segment, else the JSONL/.gz/.zst/Parquet/Arrow files to segment first."""
    from aunet.segment import InvalidRequest, expand_inputs

    sources = cfg.data.sources if key == "data.sources" else cfg.eval.validation.sources
    root = Path(cfg.data.root_dir) if cfg.data.root_dir else None
    out: list[tuple[str, Path, float, list[str] | None]] = []
    for name, weight in sources.items():
        if weight <= 0:
            continue
        path = Path(name) if root is None or Path(name).is_absolute() else root / name
        if (path / "manifest.json").is_file():
            out.append((name, path, float(weight), None))
            continue
        try:
            raw = expand_inputs([str(path)], raw_cache(cfg, key, name))
        except InvalidRequest as e:
            raise FileNotFoundError(f"{key}.{name}: {path} is neither a shard directory (with manifest.json) nor raw text input: {e}") from None
        out.append((name, path, float(weight), [str(f) for f in raw]))
    if not out and key == "data.sources":
        raise ValueError("data.sources: no source with a positive weight")
    return out


def raw_cache(cfg: TrainArgs, key: str, name: str) -> Path:
    """Where raw-text source `name` is segmented: <dump_dir>/segmented/<key>/<name>."""
    safe = name.strip("/").replace("/", "_") or "source"
    return Path(cfg.dump_dir or f"runs/{cfg.name}") / "segmented" / key.split(".")[0] / safe


def source_paths(cfg: TrainArgs, key: str = "data.sources", rank: int = 0, world_size: int = 1, barrier=None) -> dict[str, float]:
    """Shard directories to read. Raw-text sources are segmented first by all ranks together
    (`segment_corpus` with rank/world_size: rank r takes input files k = r mod W, resumably,
    rejects recorded), then rank 0 merges the rank manifests into one, between `barrier`s."""
    import sys

    from aunet.segment import merge, segment_corpus

    local = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, len(os.sched_getaffinity(0)) // max(local, 1))  # the node's cores shared by its ranks
    out = {}
    for name, path, weight, raw in resolve_sources(cfg, key):
        if raw is None:
            out[str(path)] = weight
            continue
        cache = raw_cache(cfg, key, name)
        part = segment_corpus(raw, cache, cfg.data.shard_strategy, on_error="skip", rank=rank, world_size=world_size,
                              threads=threads, progress=rank == 0 and sys.stderr.isatty())
        if barrier is not None:
            barrier()
        if rank == 0:
            if world_size > 1:
                for stale in cache.glob("manifest.rank*-of*.json"):  # rank manifests of a run with another world size
                    if not stale.name.endswith(f"-of{world_size}.json"):
                        stale.unlink()
                m = merge(cache)
            else:
                m = part
            print(f"{key}.{name}: {m.documents_written:,} documents segmented into {cache} by {world_size} rank(s)"
                  + (f" ({m.documents_rejected:,} rejected, listed in {cache / 'rejects'})" if m.documents_rejected else ""), flush=True)
        if barrier is not None:
            barrier()
        out[str(cache)] = weight
    return out


def check_sources(cfg: TrainArgs, directories: list[str], rank: int) -> None:
    """Refuse shards made with another strategy list or depth than the model's, unless
    `data.allow_shard_mismatch` (then rank 0 reports each difference)."""
    from aunet.data.contract import check_shards

    strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
    for problem in check_shards(directories, strategy, cfg.model.n_levels, cfg.data.allow_shard_mismatch,
                                "set data.allow_shard_mismatch=true"):
        if rank == 0:
            print(f"warning (data.allow_shard_mismatch): {problem}", flush=True)


def tokenizer_path(cfg: TrainArgs) -> str | None:
    """The BPE tokenizer file of a BPE baseline; None for byte-level models."""
    return cfg.data.tokenizer.path if cfg.data.tokenizer.name == "bpe" else None


#: Smallest default ZeRO bucket (elements, 16 MB in fp32): below it every collective pays its
#: latency for little data, and a small model splits its step into hundreds of them (a 0.6M
#: model with h^2 buckets ran its CPU demo 4x slower).
MIN_BUCKET = 1 << 22


def zero_config(cfg: TrainArgs) -> dict:
    """DeepSpeed's `zero_optimization` section; bucket sizes scale with the widest stage h
    (h^2, at least MIN_BUCKET) unless `distributed.zero_*` sets them (reasons in
    aunet/config/train.py)."""
    d, hidden = cfg.distributed, max(cfg.model.dimensions)
    square = max(hidden * hidden, MIN_BUCKET)
    zero = {"stage": d.zero, "reduce_bucket_size": d.zero_reduce_bucket_size if d.zero_reduce_bucket_size is not None else square}
    if d.zero == 3:
        zero["stage3_prefetch_bucket_size"] = d.zero_prefetch_bucket_size if d.zero_prefetch_bucket_size is not None else int(0.9 * square)
        zero["stage3_param_persistence_threshold"] = (d.zero_param_persistence_threshold
                                                      if d.zero_param_persistence_threshold is not None else 10 * hidden)
        if d.zero_max_live_parameters is not None:
            zero["stage3_max_live_parameters"] = d.zero_max_live_parameters
    return zero


def deepspeed_config(cfg: TrainArgs, on_gpu: bool) -> dict:
    bf16 = on_gpu and cfg.distributed.model_dtype == "bf16"
    fp16 = on_gpu and cfg.distributed.model_dtype == "fp16"
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.grad_acc_steps,
        "gradient_clipping": cfg.optim.clip,
        "zero_optimization": zero_config(cfg),
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": fp16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.optim.lr,
                "betas": [cfg.optim.beta1, cfg.optim.beta2],
                "eps": cfg.optim.epsilon,
                "weight_decay": cfg.optim.weight_decay,
                # torch's AdamW everywhere, its fused CUDA kernel on GPUs: DeepSpeed's FusedAdam is
                # JIT-compiled with nvcc on first use, which a pip-installed torch does not bring.
                "torch_adam": True,
                **({"fused": True} if on_gpu else {}),
            },
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        parts = [f"step {record['step']}"] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k != "step"]
        print(" | ".join(parts), flush=True)


def train(cfg: TrainArgs, unused: list[str] | None = None, stop_at: int | None = None) -> dict:
    ensure_ds_accelerator()
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from aunet.data import LoaderArgs, PackedLoader
    from aunet.model.flops import flops_per_byte

    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    device = torch.device(accel.device_name(), int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    dump = Path(cfg.dump_dir or f"runs/{cfg.name}")
    ckpt_root = Path(cfg.checkpoint.path) if cfg.checkpoint.path else dump / "checkpoints"
    latest = latest_complete(ckpt_root)
    if latest is not None:
        from aunet.training.resume import check_same_run

        # Before writing config.yaml, segmenting or building anything: a run whose config changed
        # stops at once, on all ranks alike (`resume` checks each checkpoint it falls back to too).
        check_same_run(ckpt_root / tag_for(latest), cfg, world)
    if rank == 0:
        dump.mkdir(parents=True, exist_ok=True)
        import yaml

        (dump / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if unused:
            print(f"config keys not used by this trainer: {', '.join(unused)}", flush=True)
    init_from = None
    if cfg.checkpoint.init_ckpt_path and latest is None:
        from aunet.training.init_weights import resolve

        # Checked on every rank before segmenting or building anything, so that a source that
        # does not fit fails at once, on all ranks alike.
        init_from = resolve(cfg.checkpoint.init_ckpt_path, cfg)

    sources = source_paths(cfg, rank=rank, world_size=world, barrier=dist.barrier)
    validation = source_paths(cfg, "eval.validation.sources", rank=rank, world_size=world, barrier=dist.barrier)
    check_sources(cfg, [*sources, *validation], rank)
    loader = PackedLoader(
        LoaderArgs(sources, seq_len=cfg.data.seq_len, batch_size=cfg.data.batch_size, add_bos=cfg.data.add_bos,
                   add_eos=cfg.data.add_eos, seed=cfg.data.seed, prefetch=cfg.data.prefetch_size if cfg.data.load_async else 0,
                   shuffle_buffer=cfg.data.shuffle_buffer,
                   rank=rank, world_size=world, tokenizer=tokenizer_path(cfg), pin_memory=on_gpu,
                   verify_shards=cfg.data.verify_shards)
    )
    if len(loader.token_bytes) > cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {len(loader.token_bytes)} ids")
    ds_config = deepspeed_config(cfg, on_gpu)
    apply_torch_settings(cfg, on_gpu)
    model = build_model(cfg, ds_config)
    model.set_activation_checkpointing(cfg.distributed.selective_activation_checkpointing)
    if init_from is not None:
        from aunet.training.init_weights import load_into

        # Before `initialize`: the optimizer takes its fp32 master weights from the parameters.
        load_into(model, init_from, rank)
        if rank == 0:
            print(f"initialised the weights from {init_from.describe()}; optimizer, learning-rate schedule and data start fresh",
                  flush=True)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    if cfg.distributed.compile:
        engine.compile()

    from aunet.training.resume import resume

    def any_rank(flags: list[bool]) -> list[bool]:
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=device)  # NCCL takes device tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    start = 0
    damaged: set[int] = set()
    if latest is not None:
        latest, damaged = resume(engine, loader, ckpt_root, cfg, rank, world, any_rank)
        start = latest
        if rank == 0:
            ignored = (f" (checkpoint.init_ckpt_path={cfg.checkpoint.init_ckpt_path} not used: a run resumes from its own checkpoint)"
                       if cfg.checkpoint.init_ckpt_path else "")
            print(f"resumed from {ckpt_root / tag_for(latest)}{ignored}", flush=True)

    flops = flops_per_byte(cfg.model, cfg.data.seq_len).total  # per input position: a byte, or a BPE token
    peak = PEAK_FLOPS["cuda" if on_gpu else "cpu"] * world
    log = MetricsLog(dump / "metrics.jsonl", rank == 0)
    torch.manual_seed(cfg.seed + 1000 * rank + start)
    metrics = DeviceMetrics(device)
    tic = time.perf_counter()
    last = {}
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    for step in range(start + 1, end + 1):
        lr = cfg.optim.lr * lr_factor(step, cfg.optim.warmup, cfg.steps, cfg.optim.lr_min_ratio, cfg.optim.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(cfg.grad_acc_steps):
            micro_step(engine, next(loader), device, metrics)
        metrics.end_step(engine.get_global_grad_norm())
        if step % cfg.gc_collect_freq == 0:
            gc.collect()
        saving = step % cfg.checkpoint.dump.every == 0 or step == end
        checking = step % cfg.logging.freq == 0 or saving
        if checking:  # the one host read of the bad-step counters, where the host waits anyway
            bad_now, bad_run = metrics.health(dist.all_reduce)
        if step % cfg.logging.freq == 0 or step == end:
            last = log_record(step, lr, metrics.reduced(dist.all_reduce).tolist(), metrics, time.perf_counter() - tic,
                              engine.get_global_grad_norm(), world, flops / peak)
            log.write(last)
            metrics.reset()
            tic = time.perf_counter()
        if checking and bad_run >= cfg.optim.max_bad_steps:
            newest = latest_complete(ckpt_root)
            loader.close()  # its reader thread stopped before the process exits
            raise NonFiniteTraining(
                f"step {step}: the loss or the gradient norm was not finite for {bad_run} consecutive steps "
                f"(optim.max_bad_steps = {cfg.optim.max_bad_steps}); stopped without saving or pruning a checkpoint; "
                + (f"the newest complete one is {ckpt_root / tag_for(newest)}" if newest is not None else "there is none yet"))
        if validation and (step % cfg.checkpoint.eval.every == 0 or step == end):
            from aunet.inference.evaluate import heldout_bpb

            val = heldout_bpb(engine, validation, cfg.data.seq_len, cfg.data.batch_size, cfg.eval.validation.max_steps,
                              rank, world, device, reduce=dist.all_reduce, tokenizer=tokenizer_path(cfg),
                              add_bos=cfg.data.add_bos, add_eos=cfg.data.add_eos, verify_shards=cfg.data.verify_shards)
            log.write({"step": step, "val_bpb": val["bpb"], "val_bytes": val["bytes"]})
        if saving:
            if bad_now:
                if rank == 0:
                    print(f"warning: step {step}: not saving a checkpoint, the last {bad_now} step(s) had a non-finite "
                          "loss or gradient norm", flush=True)
            else:
                save(engine, loader, ckpt_root, step, rank, cfg, damaged)
    loader.close()
    gc.enable()
    dist.barrier()
    dist.destroy_process_group()
    return last


def apply_torch_settings(cfg: TrainArgs, on_gpu: bool) -> None:
    """The process-wide torch switches the config asks for, and the collector schedule:
    automatic collection is off during training, `gc_collect_freq` collects instead (on every
    rank at the same step, as the reference does, so that no rank pauses alone in the middle of
    a collective)."""
    import torch

    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = cfg.distributed.matmul_allow_tf32
        torch.backends.cudnn.allow_tf32 = cfg.distributed.matmul_allow_tf32
    if cfg.distributed.compile:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = cfg.distributed.compile_cache_size_limit
    gc.disable()
    gc.collect()


def build_model(cfg: TrainArgs, ds_config: dict):
    """The model, under ZeRO-3 partitioned as it is built (`deepspeed.zero.Init`): each
    module's parameters are split across the ranks as soon as its constructor has initialised
    them, so no rank ever holds the whole model (an 8B model is 32 GB in fp32). Every module
    initialises inside its own constructor, in construction order, from the same seed on every
    rank, so the weights do not depend on the number of ranks."""
    import deepspeed
    import torch

    from aunet.model import HierarchicalTransformer

    torch.manual_seed(cfg.model.seed)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=ds_config["zero_optimization"]["stage"] == 3):
        return HierarchicalTransformer(cfg.model)


def micro_step(engine, batch: dict, device, metrics: DeviceMetrics) -> None:
    """Forward, backward and (at the accumulation boundary) the optimizer step of one
    micro-batch. Nothing here reads a tensor on the host: the copies are asynchronous (the
    loader pins its batches on GPUs) and the metrics stay on the device."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    _, loss, (nats, scored) = engine(batch["tokens"], batch["levels"], batch["targets"], batch["target_levels"],
                                     batch["target_bytes"])
    engine.backward(loss)
    engine.step()
    metrics.add(loss, nats, scored, batch["target_bytes"], batch["tokens"].numel())


def log_record(step: int, lr: float, totals: list[float], metrics: DeviceMetrics, elapsed: float, grad_norm,
               world: int, flops_share: float) -> dict:
    """One metrics.jsonl record from the summed (all-reduced) totals of `DeviceMetrics`."""
    sums = dict(zip(FIELDS, totals))
    tokens_per_s = metrics.tokens * world / elapsed
    return {
        "step": step,
        "loss": sums["loss"] / (metrics.micro_steps * world),
        "bpb": sums["nats"] / max(sums["scored_bytes"], 1.0) / math.log(2),
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        "bytes_per_s": sums["text_bytes"] / elapsed,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_share,
    }


class NonFiniteTraining(RuntimeError):
    """`optim.max_bad_steps` consecutive steps with a non-finite loss or gradient norm."""


def save(engine, loader, root: Path, step: int, rank: int, cfg: TrainArgs, damaged: set[int] = frozenset()) -> None:
    """Save, checksum (each rank a share of the files, while they are in the page cache), mark
    complete, prune. `damaged`: steps found corrupt at resume, which never count as kept."""
    import torch.distributed as dist

    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag)
    (root / tag).mkdir(parents=True, exist_ok=True)
    (root / tag / f"loader_rank{rank}.json").write_text(json.dumps(loader.state_dict()))
    dist.barrier()  # every rank's files are written before they are checksummed
    checksum_share(root / tag, rank, dist.get_world_size())
    dist.barrier()  # ... and every share is written before the marker says so
    if rank == 0:
        mark_complete(root, step, {"name": cfg.name, "world_size": dist.get_world_size(), "config": to_dict(cfg)})
        prune(root, cfg.checkpoint.dump.keep, damaged)
    dist.barrier()
