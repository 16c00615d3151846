"""Learning rate: linear warmup, then decay to lr * lr_min_ratio (SPEC section 6): cosine (the
default and the paper's), linear, or none (`optim.scheduler`: cosine | linear | constant)."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total_steps: int, lr_min_ratio: float, kind: str = "cosine") -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (counted from 1).

    >>> lr_factor(5, warmup=10, total_steps=100, lr_min_ratio=0.1)
    0.5
    >>> round(lr_factor(100, warmup=10, total_steps=100, lr_min_ratio=0.1), 6)
    0.1
    """
    if warmup > 0 and step < warmup:
        return step / warmup
    if total_steps <= warmup or kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / (total_steps - warmup))
    if kind == "linear":
        return 1.0 - (1.0 - lr_min_ratio) * progress
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}: expected cosine, linear or constant")
    return lr_min_ratio + (1.0 - lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
