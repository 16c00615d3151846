"""The DeepSpeed config a run's `TrainArgs` asks for: batch, accumulation, clipping, ZeRO
buckets, gradient-reduction precision and the AdamW optimizer."""

from __future__ import annotations

import torch

from aunet.config import ModelArgs, TrainArgs
from aunet.model.flops import block_params

#: Smallest default ZeRO bucket (elements, 16 MB in fp32): below it every collective pays its
#: latency for little data, and a small model splits its step into hundreds of them (a 0.6M
#: model with h^2 buckets ran its CPU demo 4x slower).
MIN_BUCKET = 1 << 22
#: Largest default ZeRO bucket: DeepSpeed's own reduce-bucket default (5e8 elements); past it a
#: bucket only costs memory (a reduce bucket is allocated whole, 1 GB in bf16).
MAX_BUCKET = 500_000_000


def largest_parameter(model: ModelArgs) -> int:
    """Elements of the model's largest single parameter tensor (a trunk FFN matrix, or a
    pooling transition's 16 offset maps, which can be larger), from the model built on the
    `meta` device: no memory, a few milliseconds, and exact for whatever layout the model has."""
    from aunet.model import HierarchicalTransformer

    with torch.device("meta"):
        built = HierarchicalTransformer(model)
    return max(p.numel() for p in built.parameters())


def gather_unit(model: ModelArgs) -> int:
    """One block of the widest stage, or the largest parameter if that is larger: the most
    ZeRO gathers or reduces at once for one module of the model."""
    return max(max(block_params(model, i) for i in range(len(model.dimensions))), largest_parameter(model))


def default_bucket(model: ModelArgs) -> int:
    """The default ZeRO reduce and prefetch bucket (elements): `gather_unit`, clamped to
    [MIN_BUCKET, MAX_BUCKET]. Why one block of the widest stage: the backward pass finishes a
    block's gradients together, so one reduce-scatter per block keeps the collectives as large
    as the model allows (tens of millions of elements from 1B parameters up: 51M for AU-Net-2
    "1B", 143M for AU-Net-3 "1B"; large messages are what inter-node links need, as each
    collective pays a latency of tens of microseconds across nodes) while the next block's
    backward still overlaps it. For the prefetch, one block ahead is a whole block's matrices in
    flight while the current one computes: more than one trunk FFN matrix (11.5M elements for
    AU-Net-2 "1B"), which the former h^2 x 0.9 default (3.8M) was not. DeepSpeed's defaults
    (5e8 reduce, 5e7 prefetch) ignore the model: 5e8 reduces a 1B model in three buckets, with
    little left to overlap."""
    return min(max(gather_unit(model), MIN_BUCKET), MAX_BUCKET)


def zero_config(cfg: TrainArgs) -> dict:
    """DeepSpeed's `zero_optimization` section; bucket sizes follow `default_bucket` unless
    `distributed.zero_*` sets them (reasons in aunet/config/train.py)."""
    d, hidden = cfg.distributed, max(cfg.model.dimensions)
    bucket = default_bucket(cfg.model)
    zero = {"stage": d.zero, "reduce_bucket_size": d.zero_reduce_bucket_size if d.zero_reduce_bucket_size is not None else bucket}
    if d.zero == 3:
        zero["stage3_prefetch_bucket_size"] = d.zero_prefetch_bucket_size if d.zero_prefetch_bucket_size is not None else bucket
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
        # Gradients are reduced in the training dtype unless told otherwise (DeepSpeed's default:
        # bf16 on GPUs); `distributed.fp32_grad_reduce` sums them in fp32, as the reference does.
        **({"communication_data_type": "fp32"} if cfg.distributed.fp32_grad_reduce else {}),
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
        # No device synchronisation inside a step: DeepSpeed's throughput timer synchronises
        # the device at every step's start and end (its default), and its wall-clock breakdown
        # at every timed section; the trainer measures bytes/s itself, at logging steps.
        "wall_clock_breakdown": False,
        "timers": {"throughput": {"enabled": False}},
    }
