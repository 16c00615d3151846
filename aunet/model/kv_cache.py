"""Key/value caches for decoding, one per attention layer, owned by the attention module's caller.

A `LayerCache` preallocates keys and values for a batch, [B, H_kv, capacity, D], and writes
new positions in place (no `torch.cat` growth per step). A layer with a sliding window shorter
than the capacity keeps a ring of `window` slots: position p lives in slot p mod window, which
holds exactly the keys a query at the newest position may see. Keys are cached after RoPE, so
the order of slots does not matter to attention.

A `StackCache` holds the layer caches of one stack and where each sequence stands in it: the
number of positions cached per sequence (its RoPE position for the next one). Sequences of a
batch advance independently: a decoding step names the rows that step (`CacheStep`), which is
how each sequence's deeper stages step only at its own segment boundaries.

A `DecodeCache` is the whole model's decoding state for a batch (`HierarchicalTransformer.new_cache`):
the stack caches, and what upsampling needs between steps (each row's last coarse vector and
last pooled position per transition).

Attention itself stays in `aunet.model.layers.Attention.forward`: with a cache it runs the same
projections and RoPE as in training, writes the new keys and values here, and attends through
the same `causal_attention` (prefill) or over the cached keys with a validity mask (decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CacheStep:
    """One decoding step of a stack for `rows` of the batch (each one new position).

    ``rows`` [b] and ``positions`` [b] are device tensors; ``all_rows`` says the rows are the
    whole batch in order (the cache is then read without a gather)."""

    rows: torch.Tensor
    positions: torch.Tensor
    all_rows: bool
    slots: torch.Tensor | None = None
    """[b] the slot each row writes (positions, or positions mod the ring size)."""
    mask: torch.Tensor | None = None
    """[b, 1, 1, capacity] the slots a row's query may see."""


@dataclass
class CachePrefill:
    """A fresh batch [B, T] run through a stack; row b caches its first ``lengths[b]`` positions
    (the rest is right padding)."""

    lengths: list[int]


class LayerCache:
    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, capacity: int, ring: bool,
                 device: torch.device, dtype: torch.dtype):
        # Zeros, not empty: a masked-out slot still enters the attention product with weight 0,
        # and 0 * NaN would be NaN.
        self.keys = torch.zeros(batch, n_kv_heads, capacity, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.ring = ring

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def grow(self, capacity: int) -> None:
        """More slots (never for a ring), keeping what is cached: amortised doubling."""
        extra = capacity - self.capacity
        pad = self.keys.new_zeros(*self.keys.shape[:2], extra, self.keys.shape[3])
        self.keys = torch.cat([self.keys, pad], dim=2)
        self.values = torch.cat([self.values, pad.clone()], dim=2)

    def prefill(self, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> None:
        """Cache the first lengths[b] positions of row b of k, v [B, H_kv, T, D]."""
        cap = self.capacity
        for b, n in enumerate(lengths):
            start = max(0, n - cap) if self.ring else 0
            if n > cap and not self.ring:
                raise ValueError(f"{n} positions for a cache of {cap}")
            pos = torch.arange(start, n, device=k.device)
            slots = pos % cap if self.ring else pos
            self.keys[b, :, slots] = k[b, :, start:n].to(self.keys.dtype)
            self.values[b, :, slots] = v[b, :, start:n].to(self.values.dtype)

    def append(self, k: torch.Tensor, v: torch.Tensor, step: CacheStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one new position per row (k, v [b, H_kv, 1, D]); returns the rows' keys and
        values [b, H_kv, capacity, D]."""
        self.keys[step.rows, :, step.slots] = k[:, :, 0].to(self.keys.dtype)
        self.values[step.rows, :, step.slots] = v[:, :, 0].to(self.values.dtype)
        if step.all_rows:
            return self.keys, self.values
        return self.keys[step.rows], self.values[step.rows]


class StackCache:
    """The caches of one stack's layers for a batch, and each sequence's length in the stack."""

    def __init__(self, stack, batch: int, capacity: int, device: torch.device, dtype: torch.dtype):
        self.window = stack.window
        ring = 0 < stack.window < capacity
        capacity = stack.window if ring else capacity
        n_kv = [layer.attention.n_kv_heads for layer in stack.layers]
        self.layers = [LayerCache(batch, h, stack.head_dim, capacity, ring, device, dtype) for h in n_kv]
        self.ring = ring
        self.capacity = capacity
        self.lengths = np.zeros(batch, dtype=np.int64)
        """Positions cached per sequence (host copy: the generator plans steps from it)."""
        self._slot_range = torch.arange(capacity, device=device)

    def plan(self, rows: np.ndarray, rows_dev: torch.Tensor, positions_dev: torch.Tensor) -> CacheStep:
        """The step of `rows` (host and device copies), whose positions are `positions_dev`
        (= lengths[rows]); grows the caches first when a position would not fit."""
        needed = int(self.lengths[rows].max()) + 1 if len(rows) else 0
        if not self.ring and needed > self.capacity:
            self.capacity = max(needed, 2 * self.capacity)
            for layer in self.layers:
                layer.grow(self.capacity)
            self._slot_range = torch.arange(self.capacity, device=self._slot_range.device)
        slots = positions_dev % self.capacity if self.ring else positions_dev
        seen = self._slot_range[None, :] <= positions_dev[:, None]
        if not self.ring and self.window > 0:  # a cache grown past its window
            seen &= positions_dev[:, None] - self._slot_range[None, :] < self.window
        mask = seen[:, None, None, :]
        all_rows = len(rows) == len(self.lengths) and bool((rows == np.arange(len(rows))).all())
        return CacheStep(rows_dev, positions_dev, all_rows, slots, mask)

    def advance(self, rows: np.ndarray) -> None:
        self.lengths[rows] += 1


class DecodeCache:
    """A batch's decoding state across the whole U-Net: made by `HierarchicalTransformer.new_cache`,
    filled by its `prefill`, advanced by its `step`."""

    def __init__(self, stacks: list[StackCache], coarse: list[torch.Tensor], device: torch.device):
        self.stacks = stacks
        """Encoders 0..L-1, the trunk, decoders 0..L-1 (decoder i keeps encoder i's lengths)."""
        L = len(coarse)
        self.coarse = coarse
        """Per transition i: [B, 1, d_{i+1}], output of stage i+1 at each row's last position
        there (what Up_i reads until the row pools again)."""
        self.last_pooled = np.zeros((L, len(stacks[0].lengths)), dtype=np.int64)
        """[L, B] stage-i index of each row's last position pooled into stage i+1."""
        self.hidden: torch.Tensor | None = None
        """[B, 1, dim] final byte-level features of each row's last position (the level head's input)."""
        self.device = device
        self._pinned: torch.Tensor | None = None

    @property
    def n_levels(self) -> int:
        return len(self.coarse)

    @property
    def batch(self) -> int:
        return len(self.stacks[0].lengths)

    def stage(self, i: int) -> StackCache:
        """The stack cache that counts stage i's positions (encoder i, or the trunk at i = L)."""
        return self.stacks[i]

    def decoder(self, i: int) -> StackCache:
        return self.stacks[self.n_levels + 1 + i]

    @property
    def stage_steps(self) -> np.ndarray:
        """[B, L+1] positions each row has run through stage 0..L."""
        return np.stack([c.lengths for c in self.stacks[: self.n_levels + 1]], axis=1)

    def upload(self, parts: list[np.ndarray]) -> list[torch.Tensor]:
        """Every index array of a step in one host-to-device copy (pinned on CUDA, so it runs
        asynchronously); returns device views, one per part."""
        sizes = [len(p) for p in parts]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        host = torch.from_numpy(flat)
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.numel() < len(flat):
                self._pinned = torch.empty(max(len(flat), 1024), dtype=torch.long).pin_memory()
            self._pinned[: len(flat)].copy_(host)
            host = self._pinned[: len(flat)]
        on_device = host.to(self.device, non_blocking=True)
        return list(on_device.split(sizes))
