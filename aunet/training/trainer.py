"""The training loop under DeepSpeed (ZeRO-3 by default): the same code on a 2-core CPU box and
on GPU clusters (SPEC section 6).

Per optimizer step: set the learning rate (warmup + cosine), run `grad_acc_steps` micro-batches
through the engine, step. Every `logging.freq` steps rank 0 logs loss, bpb, lr, grad norm,
bytes/s and estimated MFU to the console and to `<dump_dir>/metrics.jsonl`. Every
`checkpoint.dump.every` steps the DeepSpeed state and every rank's loader state go to
`<checkpoint dir>/step_N/`, marked complete only once all ranks are done (`aunet.training.checkpoint`);
a rerun of the same command resumes from the newest complete checkpoint (as rank 0 lists them)
that passes its checks (`aunet.training.resume`), batch for batch. Raw-text sources are
segmented first, the ranks waiting for each other on a gloo group of their own
(`aunet.training.segment_barrier`). A run whose loss or gradient norm stays non-finite
for `optim.max_bad_steps` steps stops at the next logging or checkpoint step, saving nothing.
A run without a checkpoint of its own may start from other weights (`checkpoint.init_ckpt_path`,
`aunet.training.init_weights`): the weights only, with a fresh optimizer, schedule and data.

DeepSpeed is imported inside the functions that use it, after `ensure_ds_accelerator` has
chosen its accelerator: DeepSpeed fixes the accelerator when it is first imported.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from aunet.baselines.tokenized_source import source_opener
from aunet.config import TrainArgs, to_dict
from aunet.data import PackedLoader
from aunet.data.sources import TRAINING, VALIDATION, check_sources, resolve_sources, source_paths
from aunet.model import HierarchicalTransformer
from aunet.model.compile import compile_blocks, compile_shapes
from aunet.model.convert import PARAM_LAYOUT
from aunet.model.layers import Block
from aunet.training.accelerator import ensure_ds_accelerator, init_distributed
from aunet.training.checkpoint import checksum_share, latest_complete, mark_complete, prune, tag_for
from aunet.training.ds_config import deepspeed_config
from aunet.training.init_weights import load_into
from aunet.training.init_weights import resolve as resolve_init
from aunet.training.lr_schedule import lr_factor
from aunet.training.metrics import PEAK_FLOPS, DeviceMetrics, MetricsLog, log_record
from aunet.training.resume import candidate_steps, check_same_run, resume
from aunet.training.segment_barrier import SegmentBarrier
from aunet.training.tracking import open_trackers
from aunet.training.validate import heldout_bpb


class NonFiniteTraining(RuntimeError):
    """`optim.max_bad_steps` consecutive steps with a non-finite loss or gradient norm."""


class Trainer:
    """One run: `__init__` sets up the process group, data, model and engine and resumes;
    `train` runs the loop. Every rank builds one and calls the same methods in the same order."""

    def __init__(self, cfg: TrainArgs, unused: list[str] | None = None):
        self.cfg = cfg
        self._start_distributed()
        self.dump = Path(cfg.dump_dir or f"runs/{cfg.name}")
        self.ckpt_root = Path(cfg.checkpoint.path) if cfg.checkpoint.path else self.dump / "checkpoints"
        # Rank 0 lists the checkpoints, every rank takes its list: ranks on a network file system
        # can list different files (a directory cache that has not yet seen the newest step).
        self.candidates = candidate_steps(self.ckpt_root, self.rank, self._from_rank0)
        latest = self.candidates[-1] if self.candidates else None
        if latest is not None:
            # Before writing config.yaml, segmenting or building anything: a run whose config changed
            # stops at once, on all ranks alike (`resume` checks each checkpoint it falls back to too).
            try:
                check_same_run(self.ckpt_root / tag_for(latest), cfg, self.world)
            except (OSError, ValueError):
                pass  # this rank cannot read rank 0's newest: `resume` reports it and every rank falls back
        self._write_config(unused)
        # Checked on every rank before segmenting or building anything, so that a source that
        # does not fit fails at once, on all ranks alike.
        init_from = resolve_init(cfg.checkpoint.init_ckpt_path, cfg) if cfg.checkpoint.init_ckpt_path and latest is None else None
        self.loader, self.validation = self._build_data()
        self.engine, self.optimizer = self._build_engine(init_from)
        self.step, self.damaged = self._resume()
        self.peak_flops = PEAK_FLOPS["cuda" if self.on_gpu else "cpu"] * self.world
        config = to_dict(cfg)
        trackers = open_trackers(cfg, self.dump, self.step, config, yaml.safe_dump(config, sort_keys=False)) \
            if self.rank == 0 else []
        self.log = MetricsLog(self.dump / "metrics.jsonl", self.rank == 0, trackers)
        self.metrics = DeviceMetrics(self.device)
        self.last_record: dict = {}

    # ------------------------------------------------------------------ set-up

    def _start_distributed(self) -> None:
        ensure_ds_accelerator()
        from deepspeed.accelerator import get_accelerator

        init_distributed()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        accel = get_accelerator()
        self.on_gpu = accel.device_name() == "cuda"
        self.device = (torch.device(accel.device_name(), int(os.environ.get("LOCAL_RANK", 0))) if self.on_gpu
                       else torch.device("cpu"))

    def _write_config(self, unused: list[str] | None) -> None:
        if self.rank != 0:
            return
        self.dump.mkdir(parents=True, exist_ok=True)
        (self.dump / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        if unused:
            print(f"config keys not used by this trainer: {', '.join(unused)}", flush=True)

    def _build_data(self) -> tuple[PackedLoader, dict[str, float]]:
        """The training loader over this rank's share, and the validation shard directories
        (raw-text sources segmented first, by all ranks together)."""
        cfg, rank, world = self.cfg, self.rank, self.world
        raw = any(inputs is not None for key in (TRAINING, VALIDATION) for *_, inputs in resolve_sources(cfg, key))
        barrier = SegmentBarrier(cfg.distributed.segment_timeout_minutes) if raw else None
        sources = source_paths(cfg, rank=rank, world_size=world, barrier=barrier)
        validation = source_paths(cfg, VALIDATION, rank=rank, world_size=world, barrier=barrier)
        #: The segmentation barrier's group as torch saw it (None: no raw-text source).
        self.segmentation = barrier.release() if barrier is not None else None
        check_sources(cfg, [*sources, *validation], rank)
        loader = PackedLoader(dataclasses.replace(cfg.data, root_dir=None, sources=sources), rank, world,
                              pin_memory=self.on_gpu, open_source=source_opener(cfg.data.tokenizer.bpe_file),
                              model=cfg.model)
        if len(loader.token_bytes) > cfg.model.vocab_size:
            raise ValueError(f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {len(loader.token_bytes)} ids")
        return loader, validation

    def _build_engine(self, init_from):
        import deepspeed

        cfg = self.cfg
        ds_config = deepspeed_config(cfg, self.on_gpu)
        apply_torch_settings(cfg, self.on_gpu)
        model = build_model(cfg, ds_config)
        model.set_activation_checkpointing(cfg.distributed.selective_activation_checkpointing)
        leaf_blocks(model, ds_config["zero_optimization"]["stage"], cfg.distributed.compile, self.on_gpu)
        if cfg.distributed.compile:
            compile_blocks(model, cfg.distributed.compile_backend)
        if init_from is not None:
            # Before `initialize`: the optimizer takes its fp32 master weights from the parameters.
            load_into(model, init_from, self.rank)
            if self.rank == 0:
                print(f"initialised the weights from {init_from.describe()}; optimizer, learning-rate schedule and data start fresh",
                      flush=True)
        engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
        return engine, optimizer

    def _any_rank(self, flags: list[bool]) -> list[bool]:
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=self.device)  # NCCL takes device tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def _from_rank0(self, value):
        """Rank 0's `value` on every rank (a pickled object; outside the training step, so the
        host sync of its size is harmless). NCCL takes device tensors only, hence `device`."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def _resume(self) -> tuple[int, set[int]]:
        """(the step to continue after, the checkpoint steps found damaged)."""
        if not self.candidates:
            return 0, set()
        cfg = self.cfg
        step, damaged = resume(self.engine, self.loader, self.ckpt_root, self.candidates, cfg, self.rank, self.world,
                               self._any_rank)
        if self.rank == 0:
            ignored = (f" (checkpoint.init_ckpt_path={cfg.checkpoint.init_ckpt_path} not used: a run resumes from its own checkpoint)"
                       if cfg.checkpoint.init_ckpt_path else "")
            print(f"resumed from {self.ckpt_root / tag_for(step)}{ignored}", flush=True)
        return step, damaged

    # ------------------------------------------------------------------ the loop

    def train(self, stop_at: int | None = None) -> dict:
        """Steps up to `cfg.steps` (or `stop_at`, saving there); returns the last metrics record."""
        cfg = self.cfg
        end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        torch.manual_seed(cfg.seed + 1000 * self.rank + self.step)
        self.tic = time.perf_counter()
        for step in range(self.step + 1, end + 1):
            self.step = step
            lr = self.train_step(step)
            final = step == end
            health = self.check_health(step, final)
            self.maybe_log(step, lr, final)
            self.stop_if_diverged(step, health)
            self.maybe_validate(step, final)
            self.maybe_save(step, final, health)
        self.close()
        return self.last_record

    def train_step(self, step: int) -> float:
        """One optimizer step of `grad_acc_steps` micro-batches; returns its learning rate."""
        cfg = self.cfg
        lr = cfg.optim.lr * lr_factor(step, cfg.optim.warmup, cfg.steps, cfg.optim.lr_min_ratio, cfg.optim.scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for _ in range(cfg.grad_acc_steps):
            micro_step(self.engine, next(self.loader), self.device, self.metrics)
        self.metrics.end_step(self.engine.get_global_grad_norm())
        if step % cfg.gc_collect_freq == 0:
            gc.collect()
        return lr

    def _saves_at(self, step: int, final: bool) -> bool:
        return step % self.cfg.checkpoint.dump.every == 0 or final

    def check_health(self, step: int, final: bool) -> tuple[int, int] | None:
        """(bad steps ending here, longest bad run) on any rank, read at logging and checkpoint
        steps only: the one host read of the bad-step counters, where the host waits anyway."""
        if step % self.cfg.logging.freq == 0 or self._saves_at(step, final):
            return self.metrics.health(dist.all_reduce)
        return None

    def maybe_log(self, step: int, lr: float, final: bool) -> None:
        if step % self.cfg.logging.freq != 0 and not final:
            return
        totals = self.metrics.reduced(dist.all_reduce).tolist()
        self.last_record = log_record(step, lr, totals, self.metrics, time.perf_counter() - self.tic,
                                      self.engine.get_global_grad_norm(), self.world, self.peak_flops)
        self.log.write(self.last_record)
        self.metrics.reset()
        self.tic = time.perf_counter()

    def stop_if_diverged(self, step: int, health: tuple[int, int] | None) -> None:
        if health is None or health[1] < self.cfg.optim.max_bad_steps:
            return
        newest = latest_complete(self.ckpt_root)
        self.loader.close()  # its reader thread stopped before the process exits
        self.log.close()
        raise NonFiniteTraining(
            f"step {step}: the loss or the gradient norm was not finite for {health[1]} consecutive steps "
            f"(optim.max_bad_steps = {self.cfg.optim.max_bad_steps}); stopped without saving or pruning a checkpoint; "
            + (f"the newest complete one is {self.ckpt_root / tag_for(newest)}" if newest is not None else "there is none yet"))

    def maybe_validate(self, step: int, final: bool) -> None:
        cfg = self.cfg
        if not self.validation or (step % cfg.checkpoint.eval.every != 0 and not final):
            return
        d = cfg.data
        val = heldout_bpb(self.engine, self.validation, d.seq_len, d.batch_size, cfg.eval.validation.max_steps,
                          self.rank, self.world, self.device, reduce=dist.all_reduce, tokenizer=d.tokenizer.bpe_file,
                          add_bos=d.add_bos, add_eos=d.add_eos, verify_shards=d.verify_shards)
        self.log.write({"step": step, "val_bpb": val["bpb"], "val_bytes": val["bytes"]})

    def maybe_save(self, step: int, final: bool, health: tuple[int, int] | None) -> None:
        if not self._saves_at(step, final):
            return
        bad_now = health[0]
        if bad_now:
            if self.rank == 0:
                print(f"warning: step {step}: not saving a checkpoint, the last {bad_now} step(s) had a non-finite "
                      "loss or gradient norm", flush=True)
            return
        save(self.engine, self.loader, self.ckpt_root, step, self.rank, self.cfg, self.damaged)

    def close(self) -> None:
        self.loader.close()
        self.log.close()
        gc.enable()
        dist.barrier()
        dist.destroy_process_group()


def train(cfg: TrainArgs, unused: list[str] | None = None, stop_at: int | None = None) -> dict:
    """Set up, resume and train one run (see `Trainer`); returns the last metrics record."""
    return Trainer(cfg, unused).train(stop_at)


def apply_torch_settings(cfg: TrainArgs, on_gpu: bool) -> None:
    """The process-wide torch switches the config asks for, and the collector schedule:
    automatic collection is off during training, `gc_collect_freq` collects instead (on every
    rank at the same step, as the reference does, so that no rank pauses alone in the middle of
    a collective)."""
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = cfg.distributed.matmul_allow_tf32
        torch.backends.cudnn.allow_tf32 = cfg.distributed.matmul_allow_tf32
    if cfg.distributed.compile:
        from torch import _dynamo  # loaded only by compiled runs (it takes seconds to import)

        # Every stage-length bucket, in training and in validation (no grad), may need its own
        # compiled block; past the limit dynamo would run the rest uncompiled.
        needed = 2 * compile_shapes(cfg.model, cfg.data.seq_len)
        _dynamo.config.cache_size_limit = max(cfg.distributed.compile_cache_size_limit, needed)
    gc.disable()
    gc.collect()


def build_model(cfg: TrainArgs, ds_config: dict):
    """The model, under ZeRO-3 partitioned as it is built (`deepspeed.zero.Init`): each
    module's parameters are split across the ranks as soon as its constructor has initialised
    them, so no rank ever holds the whole model (an 8B model is 32 GB in fp32). Every module
    initialises inside its own constructor, in construction order, from the same seed on every
    rank, so the weights do not depend on the number of ranks."""
    import deepspeed

    torch.manual_seed(cfg.model.seed)
    with deepspeed.zero.Init(config_dict_or_path=ds_config, enabled=ds_config["zero_optimization"]["stage"] == 3):
        return HierarchicalTransformer(cfg.model)


def leaf_blocks(model, zero_stage: int, compiled: bool, on_gpu: bool) -> bool:
    """Under ZeRO-3, make each transformer block a DeepSpeed leaf module (before
    `deepspeed.initialize` installs its hooks) when the blocks are compiled or the run is on
    CPUs; returns whether it did. A leaf block's parameters are gathered by one hook before the
    block and none runs inside it: a compiled block stays one graph, and on a CPU, where no
    other stream could overlap a finer-grained gather, each step runs a fraction of the
    per-module hooks (docs/benchmarks.md, "Demo and test suite"). The parameters stay
    partitioned. GPU runs in eager mode keep DeepSpeed's per-module gathers."""
    if zero_stage != 3 or (on_gpu and not compiled):
        return False
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, [Block])
    return True


def micro_step(engine, batch: dict, device, metrics: DeviceMetrics) -> None:
    """Forward, backward and (at the accumulation boundary) the optimizer step of one
    micro-batch. Nothing here reads a tensor on the host: the copies are asynchronous (the
    loader pins its batches on GPUs), the metrics stay on the device, and the stage lengths
    and FLOPs come from the loader as host numbers."""
    lengths = batch.get("stage_lengths")
    if "flops" in batch:
        metrics.add_work(*batch["flops"])
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    _, loss, (nats, scored) = engine(batch["tokens"], batch["levels"], batch["targets"], batch["target_levels"],
                                     batch["target_bytes"], stage_lengths=lengths)
    engine.backward(loss)
    engine.step()
    metrics.add(loss, nats, scored, batch["target_bytes"], batch["tokens"].numel())


def save(engine, loader, root: Path, step: int, rank: int, cfg: TrainArgs, damaged: set[int] = frozenset()) -> None:
    """Save, checksum (each rank a share of the files, while they are in the page cache), mark
    complete, prune. `damaged`: steps found corrupt at resume, which never count as kept."""
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag)
    (root / tag).mkdir(parents=True, exist_ok=True)
    (root / tag / f"loader_rank{rank}.json").write_text(json.dumps(loader.state_dict()))
    dist.barrier()  # every rank's files are written before they are checksummed
    checksum_share(root / tag, rank, dist.get_world_size())
    dist.barrier()  # ... and every share is written before the marker says so
    if rank == 0:
        mark_complete(root, step, {"name": cfg.name, "world_size": dist.get_world_size(),
                                   "zero_stage": engine.zero_optimization_stage(), "config": to_dict(cfg),
                                   "param_layout": PARAM_LAYOUT})
        prune(root, cfg.checkpoint.dump.keep, damaged)
    dist.barrier()
