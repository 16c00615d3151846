"""How positions move between the stages of the U-Net walk, one object per mode.

`HierarchicalTransformer._walk` runs the stages in one order for training, prefill and one
decoding step; a route tells it, per stage, which cache the stack writes (if any), how the
encoder's output pools down, and how the coarse vectors come back up:

- `FullRoute` (training, evaluation): a `PoolIndex` per transition from the levels, no cache.
- `PrefillRoute`: the same pooling, and every stack fills its cache; each row's last coarse
  vector and last pooled position are kept for the steps that follow.
- `StepRoute`: one new position per stepping row. The host plans which rows climb to each
  stage (level above the stage, and room under `max_seqlens`) and uploads every index in one
  copy; a row that does not climb to stage i+1 upsamples from its kept coarse vector.
"""

from __future__ import annotations

import numpy as np
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
        self.store.last_pooled[i] = index.idx[rows, (counts - 1).clamp(min=0)].cpu().numpy()
        return x

    def up(self, i: int, z: torch.Tensor | None, transition: Transition) -> torch.Tensor:
        assert z is not None
        last = torch.tensor([max(c, 1) - 1 for c in self.valid[i + 1]], device=z.device)
        self.store.coarse[i] = gather_rows(z, last[:, None]).clone()
        return super().up(i, z, transition)

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        store, L = self.store, self.store.n_levels
        for i in range(L):
            store.stage(i).lengths[:] = store.decoder(i).lengths[:] = self.valid[i]
        store.stage(L).lengths[:] = self.valid[L]
        last = torch.tensor([n - 1 for n in self.valid[0]], device=z.device)
        store.hidden = gather_rows(z, last[:, None]).clone()
        return store.hidden


class StepRoute:
    """One new position for each of `rows` (host array), whose tokens and levels are given."""

    def __init__(self, args: ModelArgs, cache: DecodeCache, rows: np.ndarray, tokens: np.ndarray,
                 levels: np.ndarray):
        L, store = args.n_levels, cache
        self.store = store
        # Plan every stage on the host: which rows step there (a new byte climbs while its
        # level exceeds the stage and the next stage has room), at which positions.
        self.rows, climbs = [rows], []
        stage_lv = levels
        for i in range(L):
            go = stage_lv > i
            limit = args.max_seqlens[i + 1]
            if limit != -1:
                go &= store.stage(i + 1).lengths[self.rows[i]] < limit
            climbs.append(go)
            self.rows.append(self.rows[i][go])
            stage_lv = stage_lv[go]
        parts = [tokens]
        for i in range(L + 1):
            parts += [self.rows[i], store.stage(i).lengths[self.rows[i]]]
        for i in range(L):
            here = self.rows[i]
            # Which of stage i's rows go on, and each new position's offset from its row's last
            # pooled position once this step is done (0 for the rows pooled now).
            parts.append(np.flatnonzero(climbs[i]))
            parts.append(np.where(climbs[i], 0, store.stage(i).lengths[here] - store.last_pooled[i, here]))
        for i in range(L):
            store.last_pooled[i, self.rows[i + 1]] = store.stage(i).lengths[self.rows[i + 1]]
        dev = store.upload(parts)
        self.tokens = dev[0]
        self.rows_dev = [dev[1 + 2 * i] for i in range(L + 1)]
        self.positions = [dev[2 + 2 * i] for i in range(L + 1)]
        self.climb = [dev[2 * L + 3 + 2 * i] for i in range(L)]
        self.offset = [dev[2 * L + 4 + 2 * i] for i in range(L)]

    def enters(self, stage: int) -> bool:
        return len(self.rows[stage]) > 0

    def cache(self, slot: int, stage: int) -> tuple[StackCache, CacheStep]:
        stack = self.store.stacks[slot]
        return stack, stack.plan(self.rows[stage], self.rows_dev[stage], self.positions[stage])

    def down(self, i: int, e: torch.Tensor, transition: Transition) -> torch.Tensor:
        return transition.down_step(e[self.climb[i]])

    def up(self, i: int, z: torch.Tensor | None, transition: Transition) -> torch.Tensor:
        coarse = self.store.coarse[i]
        if z is not None:
            coarse.index_copy_(0, self.rows_dev[i + 1], z)
        return transition.up_step(coarse[self.rows_dev[i]], self.offset[i][:, None])

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        store, L = self.store, self.store.n_levels
        for i in range(L):
            store.stage(i).advance(self.rows[i])
            store.decoder(i).advance(self.rows[i])
        store.stage(L).advance(self.rows[L])
        if store.hidden is None:
            store.hidden = torch.zeros(store.batch, 1, z.shape[-1], device=z.device, dtype=z.dtype)
        store.hidden.index_copy_(0, self.rows_dev[0], z)
        return z
