"""Sampling on the device: one byte per row from logits, with the row's own random stream.

A row's n-th draw is a hash of (seed, n), not a draw from a stateful generator: it depends on
nothing else, so a row samples in a batch what it samples alone, the draw needs no host
round trip, and a compiled or captured step can include it (its shapes and its work never
depend on the data).
"""

from __future__ import annotations

import math

import torch

#: What each sampling setting accepts. Anything else is refused rather than reinterpreted (a
#: negative temperature is not greedy, a top_p above 1 is not "off", NaN is not a number).
SAMPLING_RULES = {
    "temperature": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = greedy)"),
    "top_k": (lambda v: v >= 0, "a whole number >= 0 (0 = no limit)"),
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1] (1 = no limit)"),
}

_MASK32 = 0xFFFFFFFF


def check_sampling(**settings) -> None:
    """ValueError naming the first setting that `SAMPLING_RULES` refuses."""
    for name, value in settings.items():
        accepts, what = SAMPLING_RULES[name]
        if not accepts(value):
            raise ValueError(f"{name} must be {what}, got {value!r}")


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2^32 for x in [0, 2^32) held in int64, in two halves so nothing overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xor-shift and multiply rounds, "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """A number in [0, 1) per row (float32, 24 random bits) from the row's seed and draw index."""
    h = _mix32(_mix32(seeds & _MASK32) ^ (counters & _MASK32))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def sample_bytes(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, seeds: torch.Tensor,
                 counters: torch.Tensor) -> torch.Tensor:
    """One byte per row of logits [B, vocab] (only ids < 256 are candidates), as a device
    tensor [B]; row b's draw is `uniform(seeds[b], counters[b])`. temperature 0 is greedy.
    The draw is by inverse CDF over the kept candidates (top-k, then the smallest set of most
    likely bytes whose mass reaches top_p)."""
    x = logits[:, :256].float()
    if temperature <= 0:
        return x.argmax(-1)
    x = x / temperature
    if top_k > 0:
        kth = torch.topk(x, min(top_k, 256), dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix reaching top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(drop, 0.0))
    cdf = probs.cumsum(-1)
    u = uniform(seeds, counters) * cdf[:, -1]
    # The first id whose cumulative mass exceeds u: never one with zero probability.
    return torch.searchsorted(cdf, u[:, None], right=True).clamp_(max=255)[:, 0]
