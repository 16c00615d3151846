"""How positions move between the stages of the U-Net walk, one object per mode.

`HierarchicalTransformer._walk` runs the stages in one order for training, prefill and one
decoding step; a route tells it, per stage, which cache the stack writes (if any), how the
encoder's output pools down, and how the coarse vectors come back up:

- `FullRoute` (training, evaluation): a `PoolIndex` per transition from the levels, no cache.
- `PrefillRoute`: the same pooling, and every stack fills its cache; each row's last coarse
  vector and last pooled position are kept for the steps that follow.
- `StepRoute`: one new position per row, with static shapes: every stage the step reaches
  runs over the whole batch, and a mask per stage says which rows climb there (level above
  the stage, and room under `max_seqlens`); a row that does not climb to stage i+1 leaves
  that stage's caches alone and upsamples from its kept coarse vector. Everything is computed
  on the device, so a step needs nothing from the host but how deep it may go.
"""

from __future__ import annotations

import torch

from aunet.config.model import ModelArgs
from aunet.model.kv_cache import CachePrefill, CacheStep, DecodeCache, StackCache
from aunet.model.pooling import PoolIndex, Transition, gather_rows, pool_index


class FullRoute:
    """A whole sequence, no cache: stage i+1 holds the first `lengths[i+1]` pooled positions."""

    def __init__(self, levels: torch.Tensor, lengths: list[int]):
        self.levels = levels
        self.lengths = lengths
        self.indices: list[PoolIndex] = []

    def enters(self, stage: int) -> bool:
        """Whether any row reaches `stage` (the stages it skips do not run at all)."""
        return True

    def cache(self, slot: int, stage: int) -> tuple[StackCache | None, CachePrefill | None]:
        """The cache of stack `slot` (see `DecodeCache.stacks`), which runs stage `stage`, and
        what it does with it."""
        return None, None

    def down(self, i: int, e: torch.Tensor, transition: Transition) -> torch.Tensor:
        """Encoder-i outputs e -> the inputs of stage i+1."""
        index = pool_index(self.levels, i, self.lengths[i + 1])
        self.indices.append(index)
        self.levels = index.levels
        return transition.down(e, index)

    def up(self, i: int, z: torch.Tensor | None, transition: Transition) -> torch.Tensor:
        """Stage-(i+1) outputs z (None where stage i+1 did not run) -> one vector per stage-i
        position."""
        assert z is not None
        return transition.up(z, self.indices[i])

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        """The final byte-level features the walk returns."""
        return z


class PrefillRoute(FullRoute):
    """A fresh right-padded batch: row b's first `counts[b]` positions fill every cache."""

    def __init__(self, levels: torch.Tensor, lengths: list[int], counts: list[int], cache: DecodeCache):
        super().__init__(levels, lengths)
        self.store = cache
        self.valid = [counts]
        """Per stage, each row's number of real (not padding) positions."""

    def cache(self, slot: int, stage: int) -> tuple[StackCache, CachePrefill]:
        return self.store.stacks[slot], CachePrefill(self.valid[stage])

    def down(self, i: int, e: torch.Tensor, transition: Transition) -> torch.Tensor:
        x = super().down(i, e, transition)
        index = self.indices[i]
        counts = index.valid.sum(1)
        self.valid.append(counts.tolist())
        rows = torch.arange(len(counts), device=counts.device)
        self.store.last_pooled[i] = index.idx[rows, (counts - 1).clamp(min=0)]
        return x

    def up(self, i: int, z: torch.Tensor | None, transition: Transition) -> torch.Tensor:
        assert z is not None
        last = torch.tensor([max(c, 1) - 1 for c in self.valid[i + 1]], device=z.device)
        self.store.coarse[i].copy_(gather_rows(z, last[:, None]))
        return super().up(i, z, transition)

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        store = self.store
        store.lengths.copy_(torch.tensor(self.valid, dtype=torch.long))
        last = torch.tensor([n - 1 for n in self.valid[0]], device=z.device)
        store.hidden.copy_(gather_rows(z, last[:, None]))
        return store.hidden


class StepRoute:
    """One new position for every row of the batch: `tokens` [B] with `levels` [B] (device,
    as `HierarchicalTransformer.step_levels` gives them), stepping only where `active` [B].
    `depth`: the deepest stage any row may reach this step (a host int: the stages below it
    do not run at all, which is what keeps a step that no row climbs in cheap)."""

    def __init__(self, args: ModelArgs, cache: DecodeCache, levels: torch.Tensor, active: torch.Tensor, depth: int):
        self.store = store = cache
        self.depth = depth
        self.positions = store.lengths.clone()  # [L+1, B], before this step
        self.plans: dict[tuple, CacheStep] = {}
        self.active = [active]
        for i in range(depth):
            go = self.active[i] & (levels > i)
            limit = args.max_seqlens[i + 1]
            if limit != -1:
                go = go & (self.positions[i + 1] < limit)
            self.active.append(go)

    def enters(self, stage: int) -> bool:
        return stage <= self.depth

    def cache(self, slot: int, stage: int) -> tuple[StackCache, CacheStep]:
        stack = self.store.stacks[slot]
        # A stage's encoder and decoder step the same positions: with the same cache layout
        # they share one plan (slots, mask, RoPE angles).
        key = (stage, *stack.layout)
        if key not in self.plans:
            self.plans[key] = stack.plan(self.positions[stage], self.active[stage])
        return stack, self.plans[key]

    def down(self, i: int, e: torch.Tensor, transition: Transition) -> torch.Tensor:
        return transition.down_step(e)

    def up(self, i: int, z: torch.Tensor | None, transition: Transition) -> torch.Tensor:
        store = self.store
        coarse, here = store.coarse[i], self.positions[i]
        if z is None:  # stage i+1 did not run: no row climbs there
            offset = here - store.last_pooled[i]
        else:
            climb = self.active[i + 1]
            coarse.copy_(torch.where(climb[:, None, None], z.to(coarse.dtype), coarse))
            offset = torch.where(climb, 0, here - store.last_pooled[i])
            store.last_pooled[i].copy_(torch.where(climb, here, store.last_pooled[i]))
        return transition.up_step(coarse, offset[:, None])

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        store = self.store
        for i, active in enumerate(self.active):
            store.lengths[i] += active
        store.hidden.copy_(torch.where(self.active[0][:, None, None], z.to(store.hidden.dtype), store.hidden))
        return z
