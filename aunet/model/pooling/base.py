"""What every pooling type shares: the pooling index, the `Transition` interface and the registry.

Everything here has static shapes and no host synchronisation: the pooled length of stage i+1
is fixed from the input length and `max_seqlens`, pooled positions are found with a cumulative
sum and a batched binary search, and upsampling gathers what each position needs. Every
weight is reached through a submodule call, which is when DeepSpeed ZeRO-3 gathers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from aunet.config.model import Pooling


@dataclass
class PoolIndex:
    """Where the positions of stage i go in stage i+1, and back. B = batch, T = stage-i length,
    K = stage-(i+1) length."""

    idx: torch.Tensor
    """[B, K] stage-i position of each stage-(i+1) slot; padding slots repeat position T - 1."""
    valid: torch.Tensor
    """[B, K] the slot holds a pooled position (else it is padding)."""
    up_k: torch.Tensor
    """[B, T] slot of the last pooled position <= j (position 0 is always pooled)."""
    offset: torch.Tensor
    """[B, T] o(j) = j - idx[up_k[j]], the distance to that pooled position."""
    levels: torch.Tensor
    """[B, K] levels of the pooled positions (0 at padding slots), for the next transition."""


def pool_index(levels: torch.Tensor, stage: int, out_len: int) -> PoolIndex:
    """Pool the positions of `levels` [B, T] whose level exceeds `stage`, keeping the first
    `out_len`. Position 0 is always pooled (the model also forces its level to L, so that it
    stays pooled at every stage)."""
    B, T = levels.shape
    keep = levels > stage
    keep[:, 0] = True
    cum = keep.long().cumsum(1)
    slots = torch.arange(1, out_len + 1, device=levels.device).expand(B, -1).contiguous()
    # The k-th pooled position (1-based) is the first j with cum[j] >= k.
    idx = torch.searchsorted(cum, slots).clamp_(max=T - 1)
    valid = slots <= cum[:, -1:]
    up_k = cum.clamp(max=out_len) - 1
    offset = torch.arange(T, device=levels.device) - idx.gather(1, up_k)
    next_levels = torch.where(valid, levels.gather(1, idx), 0)
    return PoolIndex(idx, valid, up_k, offset, next_levels)


_ZEROS: dict[tuple[int, torch.device], torch.Tensor] = {}


def one_position(b: int, device: torch.device, offset: torch.Tensor | None = None) -> PoolIndex:
    """The pooling index of one new position per row (decoding): pooled into slot 0 (down), or
    read from slot 0 at `offset` [b, 1] from its pooled position (up)."""
    key = (b, device)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros(b, 1, dtype=torch.long, device=device)
    zero = _ZEROS[key]
    return PoolIndex(zero, torch.ones_like(zero, dtype=torch.bool), zero, zero if offset is None else offset, zero)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, t]] for x [B, N, D] and index [B, T]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class Transition(nn.Module):
    """Down_i and Up_i between stage i (width d_in) and stage i+1 (width d_out).

    A type defines `project_down` (a pooled vector d_in -> d_out) and `up` (coarse vectors back
    to every stage-i position), and counts its parameters and FLOPs (`params`, `flops`);
    `down` and the one-position decoding steps (`down_step`, `up_step`) follow from those.
    """

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out

    def project_down(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled stage-i vectors [..., d_in] -> stage-(i+1) inputs [..., d_out]."""
        raise NotImplementedError

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        """Stage-(i+1) outputs z [B, K, d_out] -> one vector per stage-i position [B, T, d_in]."""
        raise NotImplementedError

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        """Number of parameters of this type between widths d_in and d_out."""
        raise NotImplementedError

    @classmethod
    def flops(cls, d_in: int, d_out: int, fine: float, coarse: float) -> float:
        """Training matmul FLOPs (forward + backward, 6 per weight use) for `fine` stage-i and
        `coarse` stage-(i+1) positions (see `aunet.model.flops`)."""
        raise NotImplementedError

    def down(self, e: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        """Encoder-i outputs e [B, T, d_in] -> stage-(i+1) inputs [B, K, d_out]."""
        return self.project_down(gather_rows(e, index.idx))

    def down_step(self, e: torch.Tensor) -> torch.Tensor:
        """Decoding: Down for one new pooled position per row, e [b, 1, d_in]."""
        return self.down(e, one_position(len(e), e.device))

    def up_step(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Decoding: Up for one new position per row from its coarse vector z [b, 1, d_out],
        at `offset` [b, 1] from its pooled position."""
        return self.up(z, one_position(len(z), z.device, offset))


_REGISTRY: dict[str, type[Transition]] = {}


def register(name: str) -> Callable[[type[Transition]], type[Transition]]:
    """Class decorator: the `Transition` of pooling type `name` (its canonical spelling, as
    `aunet.config.model.Pooling` writes it)."""
    def add(cls: type[Transition]) -> type[Transition]:
        if name in _REGISTRY:
            raise ValueError(f"pooling type {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls
    return add


def registered_types() -> list[str]:
    return sorted(_REGISTRY)


def pooling_class(pooling_type: str) -> type[Transition]:
    """The class of a `pooling_type` (any spelling the config accepts)."""
    name = Pooling.parse(pooling_type).name
    if name not in _REGISTRY:
        raise ValueError(f"pooling type {pooling_type!r} has no implementation (known: {', '.join(registered_types())})")
    return _REGISTRY[name]


def build_transition(pooling_type: str, d_in: int, d_out: int, eps: float) -> Transition:
    return pooling_class(pooling_type)(d_in, d_out, eps)
