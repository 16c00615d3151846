"""The training loop under DeepSpeed (ZeRO-3 by default): the same code on a 2-core CPU box and
on GPU clusters (SPEC section 6).

Per optimizer step: set the learning rate (warmup + cosine), run `grad_acc_steps` micro-batches
through the engine, step. Every `logging.freq` steps rank 0 logs loss, bpb, lr, grad norm,
bytes/s and estimated MFU to the console and to `<dump_dir>/metrics.jsonl`. Every
`checkpoint.dump.every` steps the DeepSpeed state and every rank's loader state go to
`<checkpoint dir>/step_N/`, marked complete only once all ranks are done (`aunet.training.checkpoint`);
a rerun of the same command resumes from the newest complete checkpoint, batch for batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from aunet.config import TrainArgs, to_dict
from aunet.training.accelerator import ensure_ds_accelerator, init_distributed
from aunet.training.checkpoint import latest_complete, mark_complete, prune, tag_for
from aunet.training.lr_schedule import lr_factor

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


def source_paths(cfg: TrainArgs, key: str = "data.sources", rank: int = 0, barrier=None) -> dict[str, float]:
    """Shard directories to read. Raw-text sources are segmented first (on rank 0, by
    `segment_corpus`: resumable, rejects recorded), the other ranks waiting at `barrier`."""
    from aunet.segment import segment_corpus

    out = {}
    for name, path, weight, raw in resolve_sources(cfg, key):
        if raw is None:
            out[str(path)] = weight
            continue
        cache = raw_cache(cfg, key, name)
        if rank == 0:
            m = segment_corpus(raw, cache, cfg.data.shard_strategy, on_error="skip")
            print(f"{key}.{name}: {m.documents_written:,} documents segmented into {cache}"
                  + (f" ({m.documents_rejected:,} rejected, listed in {cache / 'rejects'})" if m.documents_rejected else ""), flush=True)
        if barrier is not None:
            barrier()
        out[str(cache)] = weight
    return out


def tokenizer_path(cfg: TrainArgs) -> str | None:
    """The BPE tokenizer file of a BPE baseline; None for byte-level models."""
    return cfg.data.tokenizer.path if cfg.data.tokenizer.name == "bpe" else None


def deepspeed_config(cfg: TrainArgs, on_gpu: bool) -> dict:
    bf16 = on_gpu and cfg.distributed.model_dtype == "bf16"
    fp16 = on_gpu and cfg.distributed.model_dtype == "fp16"
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": cfg.grad_acc_steps,
        "gradient_clipping": cfg.optim.clip,
        "zero_optimization": {"stage": cfg.distributed.zero, "stage3_param_persistence_threshold": 0},
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": fp16},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.optim.lr,
                "betas": [cfg.optim.beta1, cfg.optim.beta2],
                "eps": cfg.optim.epsilon,
                "weight_decay": cfg.optim.weight_decay,
                # torch's AdamW: no JIT-compiled optimizer op needed on CPUs.
                "torch_adam": not on_gpu,
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
    from aunet.model import HierarchicalTransformer, byte_nats
    from aunet.model.flops import flops_per_byte

    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    device = torch.device(accel.device_name(), int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    dump = Path(cfg.dump_dir or f"runs/{cfg.name}")
    ckpt_root = Path(cfg.checkpoint.path) if cfg.checkpoint.path else dump / "checkpoints"
    if rank == 0:
        dump.mkdir(parents=True, exist_ok=True)
        import yaml

        (dump / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if unused:
            print(f"config keys not used by this trainer: {', '.join(unused)}", flush=True)

    sources = source_paths(cfg, rank=rank, barrier=dist.barrier)
    validation = source_paths(cfg, "eval.validation.sources", rank=rank, barrier=dist.barrier)
    loader = PackedLoader(
        LoaderArgs(sources, seq_len=cfg.data.seq_len, batch_size=cfg.data.batch_size, add_bos=cfg.data.add_bos,
                   add_eos=cfg.data.add_eos, seed=cfg.data.seed, prefetch=cfg.data.prefetch_size if cfg.data.load_async else 0,
                   rank=rank, world_size=world, tokenizer=tokenizer_path(cfg))
    )
    if len(loader.token_bytes) > cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {len(loader.token_bytes)} ids")
    torch.manual_seed(cfg.model.seed)
    model = HierarchicalTransformer(cfg.model)
    model.set_activation_checkpointing(cfg.distributed.selective_activation_checkpointing)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, on_gpu))
    if cfg.distributed.compile:
        engine.compile()

    start = 0
    latest = latest_complete(ckpt_root)
    if latest is not None:
        engine.load_checkpoint(str(ckpt_root), tag=tag_for(latest), load_lr_scheduler_states=False)
        state = json.loads((ckpt_root / tag_for(latest) / f"loader_rank{rank}.json").read_text())
        loader.load_state_dict(state)
        start = latest
        if rank == 0:
            print(f"resumed from {ckpt_root / tag_for(latest)}", flush=True)

    flops = flops_per_byte(cfg.model, cfg.data.seq_len).total  # per input position: a byte, or a BPE token
    peak = PEAK_FLOPS["cuda" if on_gpu else "cpu"] * world
    log = MetricsLog(dump / "metrics.jsonl", rank == 0)
    torch.manual_seed(cfg.seed + 1000 * rank + start)
    tic, window_bytes, window_tokens = time.perf_counter(), 0, 0
    last = {}
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    for step in range(start + 1, end + 1):
        lr = cfg.optim.lr * lr_factor(step, cfg.optim.warmup, cfg.steps, cfg.optim.lr_min_ratio, cfg.optim.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64)
        nats = torch.zeros((), dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        for _ in range(cfg.grad_acc_steps):
            batch = {k: v.to(device, non_blocking=True) for k, v in next(loader).items()}
            logits, loss = engine(batch["tokens"], batch["levels"], batch["targets"], batch["target_levels"])
            engine.backward(loss)
            engine.step()
            with torch.no_grad():
                n, c = byte_nats(logits.detach(), batch["targets"], batch["target_bytes"])
            loss_sum += loss.detach().double().cpu()
            nats += n.double().cpu()
            count += c.double().cpu()
            window_bytes += int(batch["target_bytes"].sum())
            window_tokens += batch["tokens"].numel()
        if step % cfg.logging.freq == 0 or step == end:
            totals = torch.tensor([float(loss_sum), float(nats), float(count), float(window_bytes), float(window_tokens)],
                                  dtype=torch.float64)
            dist.all_reduce(totals)
            elapsed = time.perf_counter() - tic
            bytes_per_s = float(totals[3]) / elapsed
            tokens_per_s = float(totals[4]) / elapsed
            grad_norm = engine.get_global_grad_norm()
            last = {
                "step": step,
                "loss": float(totals[0]) / (cfg.grad_acc_steps * world),
                "bpb": float(totals[1] / totals[2].clamp(min=1)) / math.log(2),
                "lr": lr,
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "bytes_per_s": bytes_per_s,
                "tokens_per_s": tokens_per_s,
                "mfu": tokens_per_s * flops / peak,
            }
            log.write(last)
            tic, window_bytes, window_tokens = time.perf_counter(), 0, 0
        if validation and (step % cfg.checkpoint.eval.every == 0 or step == end):
            from aunet.inference.evaluate import heldout_bpb

            val = heldout_bpb(engine, validation, cfg.data.seq_len, cfg.data.batch_size, cfg.eval.validation.max_steps,
                              rank, world, device, reduce=dist.all_reduce, tokenizer=tokenizer_path(cfg),
                              add_bos=cfg.data.add_bos, add_eos=cfg.data.add_eos)
            log.write({"step": step, "val_bpb": val["bpb"], "val_bytes": val["bytes"]})
        if step % cfg.checkpoint.dump.every == 0 or step == end:
            save(engine, loader, ckpt_root, step, rank, cfg)
    loader.close()
    dist.barrier()
    dist.destroy_process_group()
    return last


def save(engine, loader, root: Path, step: int, rank: int, cfg: TrainArgs) -> None:
    import torch.distributed as dist

    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag)
    (root / tag).mkdir(parents=True, exist_ok=True)
    (root / tag / f"loader_rank{rank}.json").write_text(json.dumps(loader.state_dict()))
    dist.barrier()  # every rank's files are written before the marker says so
    if rank == 0:
        mark_complete(root, step, {"name": cfg.name, "world_size": dist.get_world_size(), "config": to_dict(cfg)})
        prune(root, cfg.checkpoint.dump.keep)
    dist.barrier()
