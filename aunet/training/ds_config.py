"""The DeepSpeed config a run's `TrainArgs` asks for: batch, accumulation, clipping, ZeRO
buckets, precision and the AdamW optimizer."""

from __future__ import annotations

from aunet.config import TrainArgs

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
        # No device synchronisation inside a step: DeepSpeed's throughput timer synchronises
        # the device at every step's start and end (its default), and its wall-clock breakdown
        # at every timed section; the trainer measures bytes/s itself, at logging steps.
        "wall_clock_breakdown": False,
        "timers": {"throughput": {"enabled": False}},
    }
