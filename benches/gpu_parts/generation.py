"""Part `generation`: cached generation logits against the full forward pass, in bf16, and
sampling speed at batch 1 and 32 with each step replayed as a CUDA graph and run eagerly."""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager

from gpu_parts.devices import free_memory, peak_gb, reset_peak, sync
from gpu_parts.plan import Context
from gpu_parts.running import Budget, check
from gpu_parts.train import train_model_args


TOLERANCE = (
    "bf16 rounds every activation to 8 significant bits, and the cached and the full pass sum in "
    "different orders (single-query attention over a cache, GEMV instead of GEMM), so they cannot "
    "agree bit for bit. Both are measured against the same weights run in fp32 (TF32 off): the "
    "cached logits pass when their largest error is at most 2x the full bf16 pass's largest error "
    "(as accurate as the full pass, within the spread of rounding), and the full bf16 pass itself "
    "must stay within 10% relative RMS of fp32 (so that a broken bf16 path cannot pass by "
    "making the allowance huge)."
)


def compare(a, b) -> dict:
    d = (a.double() - b.double())
    return {"max_abs": float(d.abs().max()), "rms_rel": float(d.pow(2).mean().sqrt() / b.double().pow(2).mean().sqrt())}


@contextmanager
def exact_fp32():
    """fp32 matmuls without TF32, for the reference pass."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


def generation_text(n: int) -> bytes:
    from corpora import stdlib_docs

    text = b"".join(stdlib_docs(4 * n + 20_000))
    return text[10_000: 10_000 + n]  # past the licence headers that open many files


def decode_rates(model, strategy, n: int, device) -> list[dict]:
    """Bytes/s of `Generator.generate` (temperature 0.8, top-k 50) at batch 1 and 32, with
    CUDA graphs and eagerly (CUDA graphs only on CUDA); the first call of each setting captures
    and warms up, the second is timed. With the level head's levels the host reads once per
    chunk; with the segmenter's, once per byte: both are recorded."""
    import torch

    from aunet.inference.generate import Generator

    text = generation_text(2000)
    prompts = [text[50 * i: 50 * i + 20 + i] for i in range(32)]  # lengths differ
    sources = ["segmenter"] + (["head"] if hasattr(model, "level_mask") else [])
    rows = []
    for batch in (1, 32):
        for levels in sources:
            for graphs in ([True, False] if device.type == "cuda" else [False]):
                gen = Generator(model, strategy, levels=levels, cuda_graphs=graphs)
                sampling = dict(temperature=0.8, top_k=50, seed=0)
                gen.generate(prompts[:batch], n, **sampling)
                sync(device)
                t = time.monotonic()
                out = gen.generate(prompts[:batch], n, **sampling)
                sync(device)
                rows.append({"batch": batch, "levels": levels, "cuda_graphs": graphs,
                             "bytes_per_s": round(sum(map(len, out)) / (time.monotonic() - t), 1)})
    return rows


def part_generation(ctx: "Context", rec: dict, budget: Budget) -> None:
    import torch

    from aunet.inference.generate import Generator
    from aunet.model import HierarchicalTransformer
    from aunet.model.flops import param_count

    plan, device = ctx.plan, ctx.device
    cfg = train_model_args(plan)
    torch.manual_seed(0)
    with device:  # parameters are created and initialised there, not on the host
        model = HierarchicalTransformer(cfg.model).to(torch.bfloat16).eval()
    reference = copy.deepcopy(model).float()  # the very same (bf16-representable) weights
    text = generation_text(plan.gen_prompt_bytes + plan.gen_pushed_bytes)
    prompt, rest = text[: plan.gen_prompt_bytes], text[plan.gen_prompt_bytes:]
    rec.update(params=param_count(cfg.model), prompt_bytes=len(prompt), pushed_bytes=len(rest), tolerance=TOLERANCE)
    reset_peak(device)
    gen = Generator(model, cfg.data.regex.strategy)
    (first,) = gen.prefill([prompt], room=len(rest))
    sync(device)
    t = time.monotonic()
    cached = torch.stack([first, *(gen.step([b])[0] for b in rest)])
    sync(device)
    rec["cached_bytes_per_s"] = round(len(rest) / (time.monotonic() - t), 1)
    state = gen.state
    tokens = torch.tensor([state.tokens[0]], device=device)
    levels = torch.tensor([state.levels[0]], device=device)
    with torch.no_grad():
        full = model(tokens, levels)[0][0, len(prompt):]
        with exact_fp32():
            exact = reference(tokens, levels)[0][0, len(prompt):]
    rec["peak_memory_gb"] = peak_gb(device)
    rec["stage_steps"] = state.stage_steps[0].tolist()
    rec["cached_vs_full_bf16"] = compare(cached, full)
    rec["cached_bf16_vs_fp32"] = compare(cached, exact)
    rec["full_bf16_vs_fp32"] = compare(full, exact)
    floor = rec["full_bf16_vs_fp32"]["max_abs"]
    err = rec["cached_bf16_vs_fp32"]["max_abs"]
    rec["summary"] = (f"max |cached - fp32| {err:.3g} vs full bf16's {floor:.3g} (limit 2x); "
                      f"max |cached - full bf16| {rec['cached_vs_full_bf16']['max_abs']:.3g}")
    rec["decode"] = decode_rates(model, cfg.data.regex.strategy, plan.gen_rate_bytes, device)
    del model, reference, gen, state
    free_memory(device)
    check(rec["full_bf16_vs_fp32"]["rms_rel"] <= 0.1, f"the full bf16 pass is {rec['full_bf16_vs_fp32']['rms_rel']:.1%} RMS from fp32")
    check(err <= 2 * floor, f"cached bf16 logits are {err:.3g} from fp32, more than 2x the full bf16 pass's {floor:.3g}")
