"""Decoding state: key/value caches, one per attention layer, and what the U-Net keeps between steps.

A `LayerCache` preallocates keys and values for a batch, [B, H_kv, capacity, D], and writes
new positions in place. A layer with a sliding window shorter than the capacity keeps a ring
of `window` slots: position p lives in slot p mod window, which holds exactly the keys a
query at the newest position may see. Keys are cached after RoPE, so the order of slots does
not matter to attention.

A decoding step has static shapes (SPEC section 7): every stack it reaches runs over the whole
batch, and a row that does not step there (`CacheStep.active` false) writes to a spare slot
past the capacity, which no query ever sees, so its cache is untouched (one scatter per layer,
with no read of the old contents). Nothing in a step depends on the data's values through the
host: positions, slots and masks are device tensors, so the step can be compiled as one graph
and captured as a CUDA graph.

A `DecodeCache` is the whole model's decoding state for a batch (`HierarchicalTransformer.new_cache`):
the stack caches, each stage's length per row, and what upsampling needs between steps (each
row's last coarse vector and last pooled position per transition), all on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CacheStep:
    """One decoding step of a stack: one new position per row of the batch (device tensors [B])."""

    positions: torch.Tensor
    """[B] each row's position in the stage (its RoPE position and the slot it writes)."""
    active: torch.Tensor
    """[B] the rows that step this stack; the others leave their cache as it was."""
    slots: torch.Tensor
    """[B] the slot each row writes (positions, or positions mod the ring size; the spare slot
    for an inactive row)."""
    mask: torch.Tensor
    """[B, 1, 1, capacity + 1] the slots a row's query may see (never the spare one)."""
    rope: tuple[torch.Tensor, torch.Tensor]
    """cos and sin, [B, 1, head_dim / 2], of each row's position."""


@dataclass
class CachePrefill:
    """A fresh batch [B, T] run through a stack; row b caches its first ``lengths[b]`` positions
    (the rest is right padding)."""

    lengths: list[int]


class LayerCache:
    def __init__(self, batch: int, n_kv_heads: int, head_dim: int, capacity: int, ring: bool,
                 device: torch.device, dtype: torch.dtype):
        # Zeros, not empty: a masked-out slot still enters the attention product with weight 0,
        # and 0 * NaN would be NaN. The last slot is the spare one inactive rows write to.
        self.keys = torch.zeros(batch, n_kv_heads, capacity + 1, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.ring = ring
        self.rows = torch.arange(batch, device=device)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2] - 1

    def grow(self, capacity: int) -> None:
        """More slots (never for a ring), keeping what is cached."""
        old = self.capacity
        for name in ("keys", "values"):
            store = getattr(self, name)
            bigger = store.new_zeros(*store.shape[:2], capacity + 1, store.shape[3])
            bigger[:, :, :old] = store[:, :, :old]
            setattr(self, name, bigger)

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
        """Write one new position per row (k, v [B, H_kv, 1, D]; an inactive row's goes to the
        spare slot); returns the keys and values [B, H_kv, capacity + 1, D]."""
        self.keys[self.rows, :, step.slots] = k[:, :, 0].to(self.keys.dtype)
        self.values[self.rows, :, step.slots] = v[:, :, 0].to(self.values.dtype)
        return self.keys, self.values


class StackCache:
    """The caches of one stack's layers for a batch."""

    def __init__(self, stack, batch: int, capacity: int, device: torch.device, dtype: torch.dtype):
        self.window = stack.window
        ring = 0 < stack.window < capacity
        capacity = stack.window if ring else capacity
        n_kv = [layer.attention.n_kv_heads for layer in stack.layers]
        self.layers = [LayerCache(batch, h, stack.head_dim, capacity, ring, device, dtype) for h in n_kv]
        self.ring = ring
        self.capacity = capacity
        # RoPE frequencies once per batch (decoding needs one position per row per step).
        self.freqs = rope_frequencies(stack.head_dim, stack.rope_theta, device)
        self.rope = (stack.head_dim, stack.rope_theta)
        self._slot_range = slot_range(capacity, device)

    def grow(self, capacity: int) -> None:
        """Room for `capacity` positions (a ring never grows). Shapes change: a compiled or
        captured step is rebuilt after this."""
        if self.ring or capacity <= self.capacity:
            return
        self.capacity = capacity
        for layer in self.layers:
            layer.grow(capacity)
        self._slot_range = slot_range(capacity, self._slot_range.device)

    @property
    def layout(self) -> tuple:
        """What a step's plan depends on besides the positions: stacks of one stage with the
        same layout can share a plan."""
        return (self.capacity, self.ring, self.window, *self.rope)

    def plan(self, positions: torch.Tensor, active: torch.Tensor) -> CacheStep:
        """The step of every row at `positions` [B], writing only where `active` [B]."""
        slots = positions % self.capacity if self.ring else positions
        slots = torch.where(active, slots, self.capacity)
        seen = self._slot_range[None, :] <= positions[:, None]
        if not self.ring and self.window > 0:  # a cache grown past its window
            seen = seen & (positions[:, None] - self._slot_range[None, :] < self.window)
        angles = positions.to(torch.float32)[:, None, None] * self.freqs
        return CacheStep(positions, active, slots, seen[:, None, None, :], (angles.cos(), angles.sin()))


def slot_range(capacity: int, device: torch.device) -> torch.Tensor:
    """The index of each of `capacity` slots, and for the spare slot an index no position
    reaches, so that `slot <= position` never lets a query see it."""
    index = torch.arange(capacity + 1, device=device)
    index[-1] = torch.iinfo(torch.long).max
    return index


def rope_frequencies(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """The RoPE inverse frequencies [head_dim / 2] (the arithmetic of `aunet.model.layers.rope_tables`)."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)


class DecodeCache:
    """A batch's decoding state across the whole U-Net: made by `HierarchicalTransformer.new_cache`,
    filled by its `prefill`, advanced by its `step`."""

    def __init__(self, stacks: list[StackCache], coarse: list[torch.Tensor], hidden: torch.Tensor):
        self.stacks = stacks
        """Encoders 0..L-1, the trunk, decoders 0..L-1 (decoder i runs at encoder i's positions)."""
        L, B = len(coarse), hidden.shape[0]
        device = hidden.device
        self.coarse = coarse
        """Per transition i: [B, 1, d_{i+1}], output of stage i+1 at each row's last position
        there (what Up_i reads until the row pools again)."""
        self.lengths = torch.zeros(L + 1, B, dtype=torch.long, device=device)
        """[L+1, B] positions each row has run through stage 0..L."""
        self.last_pooled = torch.zeros(L, B, dtype=torch.long, device=device)
        """[L, B] stage-i index of each row's last position pooled into stage i+1."""
        self.hidden = hidden
        """[B, 1, dim] final byte-level features of each row's last position (the level head's input)."""
        self.device = device

    @property
    def n_levels(self) -> int:
        return len(self.coarse)

    @property
    def batch(self) -> int:
        return self.hidden.shape[0]

    def stage(self, i: int) -> StackCache:
        """The stack cache of stage i's encoder (or the trunk at i = L)."""
        return self.stacks[i]

    def decoder(self, i: int) -> StackCache:
        return self.stacks[self.n_levels + 1 + i]

    def stage_of(self, slot: int) -> int:
        """The stage whose positions stack `slot` (see `stacks`) runs at."""
        L = self.n_levels
        return slot if slot <= L else slot - L - 1

    def grow(self, capacity: int, limits: list[int]) -> None:
        """Room for `capacity` positions per stage (capped by `limits`, the model's max_seqlens)."""
        for slot, stack in enumerate(self.stacks):
            limit = limits[self.stage_of(slot)]
            stack.grow(capacity if limit == -1 else min(capacity, limit))

    @property
    def stage_steps(self):
        """[B, L+1] positions each row has run through stage 0..L (numpy; a host read)."""
        return self.lengths.T.cpu().numpy()
