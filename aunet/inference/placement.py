"""Where inference runs: the device and dtype of `aunet generate`, `aunet eval` and the lm-eval
adapter. By default the GPU when there is one, in the config's `eval.generator.dtype` (bf16 in
the published configs), else the CPU in fp32 (CPU kernels for bf16 are slow and rarely exact).
"""

from __future__ import annotations

import warnings

import torch

#: The config's precision names -> torch dtypes.
CONFIG_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_device(device: str | None, strict: bool = True) -> torch.device:
    """`device` (e.g. "cuda", "cuda:1", "cpu"), or the GPU when there is one. A GPU asked for on a
    machine without one is an error (`strict`), or the CPU with a warning (the harness's command
    line asks for cuda by default)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: {e}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        if strict:
            raise ValueError(f"--device {device!r}: no CUDA GPU is available on this machine (use --device cpu)")
        warnings.warn(f"device {device!r} asked for, but no GPU is available: using the CPU", stacklevel=3)
        return torch.device("cpu")
    return chosen


def pick_dtype(device: torch.device, config_dtype: str, dtype: str | None = None) -> torch.dtype:
    """`dtype` (float32, bfloat16, float16, or the config's bf16/fp16/fp32) if given, else the
    config's `eval.generator.dtype` on a GPU and float32 elsewhere."""
    if dtype is None:
        return CONFIG_DTYPES[config_dtype] if device.type == "cuda" else torch.float32
    if dtype in CONFIG_DTYPES:
        return CONFIG_DTYPES[dtype]
    chosen = getattr(torch, str(dtype), None)
    if not isinstance(chosen, torch.dtype) or chosen not in CONFIG_DTYPES.values():
        raise ValueError(f"unknown dtype {dtype!r} (float32, bfloat16, float16, or fp32, bf16, fp16)")
    return chosen
