"""Parts `throughput_*`: bytes/s, MFU and peak memory of a bf16 training step at seq_len 8192
with the largest batch that fits: the published AU-Net-2 "1B" config, and a flat byte
transformer and a BPE-like flat transformer of equal FLOPs per byte. The step timed is the
trainer's own (`aunet.training.trainer.micro_step`), on a plain model and optimizer in bf16
autocast instead of a DeepSpeed engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gpu_parts.devices import free_memory, is_oom, peak_gb, reset_peak, sync
from gpu_parts.plan import PAPER_BYTES_PER_S, REPO, Context, Plan
from gpu_parts.running import Budget, check, optional_phase


def flat_args(width: int, layers: int, plan: Plan, vocab: int):
    from aunet.config import BlockArgs, ModelArgs

    return ModelArgs(dimensions=[width], layers=[layers], head_dims=[plan.flat_head], sliding_windows=[-1],
                     max_seqlens=[-1], residuals=[], vocab_size=vocab,
                     block=BlockArgs(multiple_of=plan.flat_multiple_of, rope_theta=500000.0))


# Among flat shapes within 3% of the target FLOPs per byte, the one whose width / depth is
# closest to this (a 2048-wide, 20-24 block model, the usual 1B shape).
ASPECT = 96


def flat_peer(target: float, seq_len: int, plan: Plan, vocab: int = 258, bytes_per_token: float = 1.0):
    """The flat transformer (full causal attention) whose training FLOPs per byte are closest to
    `target`; a BPE model's cost per byte is its cost per token over bytes per token."""
    from aunet.model.flops import flops_per_byte

    shapes = []
    for width in plan.flat_widths:
        for layers in range(2, 49):
            args = flat_args(width, layers, plan, vocab)
            per_byte = flops_per_byte(args, seq_len).total / bytes_per_token
            shapes.append((abs(math.log(per_byte / target)), abs(math.log(width / layers / ASPECT)), args))
    best = min(s[0] for s in shapes)
    return min((s for s in shapes if s[0] <= best + 0.03), key=lambda s: s[1])[2]


@dataclass
class Bench:
    """One throughput subject: its model, its sequence (in positions) and how to make a batch."""

    name: str
    args: object
    seq_len: int
    bytes_per_position: float
    batch: object  # batch_size -> the trainer's batch dict (tokens, levels, targets, ...), on the CPU


def aunet2_bench(plan: Plan) -> Bench:
    import torch

    from aunet.config import load_config
    from bench_model import text_batch

    cfg, _ = load_config(REPO / plan.throughput_config)
    T, top = plan.throughput_seq_len or cfg.data.seq_len, max(plan.batches)
    tokens, levels = text_batch(cfg.data.regex.strategy, top, T + 1)
    return Bench("AU-Net-2", cfg.model, T, 1.0, lambda B: trainer_batch(tokens[:B], levels[:B].to(torch.uint8), cfg.model))


def flat_bench(plan: Plan, target: float, seq_bytes: int, bpe: bool) -> Bench:
    import torch

    vocab = plan.bpe_vocab if bpe else 258
    bpt = plan.bytes_per_token if bpe else 1.0
    T = round(seq_bytes / bpt)
    args = flat_peer(target, T, plan, vocab, bpt)
    top = max(plan.batches)
    # Ids do not change a dense model's speed: random tokens stand for bytes / BPE ids.
    ids = torch.randint(0, 256 if not bpe else vocab, (top, T + 1), generator=torch.Generator().manual_seed(0))
    flat = torch.zeros_like(ids, dtype=torch.uint8)  # a flat model has no pooling levels
    return Bench("BPE transformer" if bpe else "byte transformer", args, T, bpt, lambda B: trainer_batch(ids[:B], flat[:B]))


def trainer_batch(windows, levels, args=None) -> dict:
    """A batch as the training loader hands it out, from windows of seq_len + 1 tokens and their
    levels (every target counts one byte of text: throughput is counted from the plan), with
    the loader's stage lengths when the model has deeper stages (`args`)."""
    import torch

    batch = {"tokens": windows[:, :-1], "targets": windows[:, 1:], "levels": levels[:, :-1], "target_levels": levels[:, 1:],
             "target_bytes": torch.ones_like(windows[:, 1:], dtype=torch.int32)}
    if args is not None and args.n_levels:
        from aunet.model.lengths import batch_stage_fields

        batch.update(batch_stage_fields(batch["levels"].numpy(), args))
    return batch


class AutocastEngine:
    """What the trainer's `micro_step` asks of a DeepSpeed engine (call, backward, step), over a
    plain model and optimizer in bf16 autocast: the trainer's step, timed without DeepSpeed."""

    def __init__(self, model, optimizer, device):
        self.model, self.optimizer, self.device = model, optimizer, device

    def __call__(self, *inputs, **options):
        import torch

        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.model(*inputs, **options)

    def backward(self, loss) -> None:
        loss.backward()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def compile_blocks(model) -> None:
    """The trainer's compilation, one transformer block at a time (`aunet.model.compile`), with
    room in dynamo's cache for every stage bucket."""
    import torch

    from aunet.model.compile import compile_blocks as compile_each_block

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    compile_each_block(model)


def training_step(model, optimizer, batch: dict, device):
    """The trainer's micro-step (forward, backward, AdamW step; bpb sums kept on the device) as a
    closure over one batch moved to the device once. Nothing in it reads a value back to the
    host, so consecutive steps queue without waiting."""
    import torch

    from aunet.training.metrics import DeviceMetrics
    from aunet.training.trainer import micro_step

    engine, metrics = AutocastEngine(model, optimizer, device), DeviceMetrics(device)
    batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return lambda: micro_step(engine, batch, device, metrics)


def timed(step, n: int, device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - t


def try_batch(model, optimizer, bench: Bench, B: int, device) -> str | None:
    """Two steps at batch B (AdamW's moments exist from the second, so its memory is the
    steady state); None if they ran, else the error. Memory is freed either way."""
    error = None
    try:
        step = training_step(model, optimizer, bench.batch(B), device)
        step()
        step()
        sync(device)
    except Exception as e:  # noqa: BLE001 - an OOM is the answer; anything else is re-raised below
        if not is_oom(e):
            raise
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    optimizer.zero_grad(set_to_none=True)
    step = None
    free_memory(device)
    return error


def largest_batch(model, optimizer, bench: Bench, plan: Plan, device, budget: Budget) -> tuple[int | None, list]:
    """The largest of plan.batches that runs (eagerly: compiled steps keep fewer activations),
    trying them in increasing order until one runs out of memory or 40% of the budget is gone."""
    best, tried = None, []
    for B in plan.batches:
        if best is not None and budget.used() > 0.4 * budget.seconds:
            tried.append({"batch": B, "skipped": "time"})
            break
        error = try_batch(model, optimizer, bench, B, device)
        tried.append({"batch": B, "fits": error is None, **({"error": error} if error else {})})
        if error:
            break
        best = B
    return best, tried


def measure(model, optimizer, bench: Bench, B: int, plan: Plan, device) -> dict:
    step = training_step(model, optimizer, bench.batch(B), device)
    timed(step, plan.warmup_steps, device)  # compiles, and settles the allocator
    reset_peak(device)
    seconds = timed(step, plan.timed_steps, device)
    bytes_per_s = plan.timed_steps * B * bench.seq_len * bench.bytes_per_position / seconds
    return {"step_s": round(seconds / plan.timed_steps, 4), "bytes_per_s": round(bytes_per_s, 1), "peak_memory_gb": peak_gb(device)}


# Below this many seconds left, a part reports its eager speed instead of starting to compile.
MIN_COMPILE_S = 20
# What a part keeps for freeing the GPU after a compile that ran out of time.
CLEANUP_S = 5


def batch_flops_per_byte(bench: Bench, B: int) -> tuple[float, float]:
    """(useful, executed) FLOPs per byte of the timed batch, as the trainer counts them: useful
    on each row's real positions, executed on the loader's bucketed stage lengths (a flat model
    runs every position, so both are the same)."""
    from aunet.model.flops import flops_per_byte

    batch = bench.batch(B)
    if "flops" not in batch:
        flat = flops_per_byte(bench.args, bench.seq_len, padded=True).total / bench.bytes_per_position
        return flat, flat
    useful, executed = batch["flops"]
    scale = B * bench.seq_len * bench.bytes_per_position
    return useful / scale, executed / scale


def record_speed(rec: dict, result: dict, timed: str, useful: float, executed: float) -> None:
    rec.update(timed=timed, bytes_per_s=result["bytes_per_s"], peak_memory_gb=result["peak_memory_gb"],
               mfu=result["bytes_per_s"] * useful / peak_flops(), mfu_executed=result["bytes_per_s"] * executed / peak_flops(),
               x_paper=result["bytes_per_s"] / PAPER_BYTES_PER_S)
    rec["summary"] = (f"batch {rec['batch']}, {timed}: {result['bytes_per_s'] / 1e3:.1f}k bytes/s, MFU {rec['mfu']:.1%} "
                      f"({rec['mfu_executed']:.1%} executed), peak {result['peak_memory_gb']} GB")


def peak_flops() -> float:
    """The dense bf16 peak that MFU divides by: the trainer's (H100 and H200 SXM alike)."""
    from aunet.training.metrics import PEAK_FLOPS

    return PEAK_FLOPS["cuda"]


def run_throughput(ctx: "Context", rec: dict, budget: Budget, bench: Bench) -> None:
    import torch

    from aunet.model import HierarchicalTransformer
    from aunet.model.flops import flops_per_byte, param_count

    plan, device = ctx.plan, ctx.device
    free_memory(device)  # what a failed earlier part left cached
    nominal = flops_per_byte(bench.args, bench.seq_len).total / bench.bytes_per_position
    padded = flops_per_byte(bench.args, bench.seq_len, padded=True).total / bench.bytes_per_position
    rec.update(model=bench.name, params=param_count(bench.args), dimensions=bench.args.dimensions,
               layers=bench.args.layers, seq_len=bench.seq_len, bytes_per_position=bench.bytes_per_position,
               vocab=bench.args.vocab_size, flops_per_byte=nominal, padded_flops_per_byte=padded,
               precision="bf16 autocast; fp32 weights, gradients and AdamW moments (fused AdamW on GPUs)")
    if plan.compile_throughput:
        torch._dynamo.reset()  # no compiled graph of an earlier part lingers (importing dynamo takes seconds)
    torch.manual_seed(0)
    with device:  # initialised on the GPU: 1.3B parameters take seconds on the host
        model = HierarchicalTransformer(bench.args)
    # fp32 master weights and moments, bf16 compute (autocast), as mixed-precision training keeps them.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    try:
        B, rec["batches_tried"] = largest_batch(model, optimizer, bench, plan, device, budget)
        check(B is not None, f"batch {plan.batches[0]} does not fit")
        rec["batch"] = B
        useful, executed = batch_flops_per_byte(bench, B)
        rec.update(batch_useful_flops_per_byte=useful, executed_flops_per_byte=executed)
        rec["eager"] = measure(model, optimizer, bench, B, plan, device)
        record_speed(rec, rec["eager"], "eager", useful, executed)  # stands if compiling runs out of time
        if plan.compile_throughput and budget.left() < MIN_COMPILE_S:
            rec["compiled"] = f"skipped: {budget.left():.0f} s left, compiling takes about {MIN_COMPILE_S} s"
        elif plan.compile_throughput:
            compiled = optional_phase(rec, "compiled", budget.left() - CLEANUP_S,
                                      lambda: (compile_blocks(model), measure(model, optimizer, bench, B, plan, device))[1])
            if compiled is not None:
                rec["compiled"] = compiled
                # The faster of the two is the model's speed (the same rule for every model).
                if compiled["bytes_per_s"] > rec["eager"]["bytes_per_s"]:
                    record_speed(rec, compiled, "compiled", useful, executed)
    finally:
        del model, optimizer
        if plan.compile_throughput:
            torch._dynamo.reset()
        free_memory(device)


def part_throughput_aunet2(ctx: "Context", rec: dict, budget: Budget) -> None:
    run_throughput(ctx, rec, budget, aunet2_bench(ctx.plan))


def equal_flops_target(ctx: "Context") -> tuple[float, int]:
    """AU-Net-2's useful FLOPs per byte and sequence length (from the config, so the baselines
    are sized even when the AU-Net-2 part failed)."""
    from aunet.config import load_config
    from aunet.model.flops import flops_per_byte

    cfg, _ = load_config(REPO / ctx.plan.throughput_config)
    T = ctx.plan.throughput_seq_len or cfg.data.seq_len
    return flops_per_byte(cfg.model, T).total, T


def part_throughput_bytes(ctx: "Context", rec: dict, budget: Budget) -> None:
    target, T = equal_flops_target(ctx)
    run_throughput(ctx, rec, budget, flat_bench(ctx.plan, target, T, bpe=False))


def part_throughput_bpe(ctx: "Context", rec: dict, budget: Budget) -> None:
    target, T = equal_flops_target(ctx)
    run_throughput(ctx, rec, budget, flat_bench(ctx.plan, target, T, bpe=True))
