"""Pooling between stages: which positions go down (SPEC section 4 step 2) and how the coarse
vectors come back up (step 4).

Everything here has static shapes and no host synchronisation: the pooled length of stage i+1
is fixed from the input length and `max_seqlens`, pooled positions are found with a cumulative
sum and a batched binary search, and multi-linear upsampling computes the 16 offset-specific
maps for every coarse vector in one matmul and then gathers the one each byte needs. (The
reference loops over the 16 offsets with `torch.where`, one host sync each, and has to keep
that function out of torch.compile.) Every weight is reached through a submodule call, which
is when DeepSpeed ZeRO-3 gathers it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aunet.config.model import MAX_OFFSET, Pooling
from aunet.model.layers import Embedding, Linear, RMSNorm, trunc_normal_


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


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b, t]] for x [B, N, D] and index [B, T]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class IndexedLinear(nn.Module):
    """`n` bias-free linear maps d_in -> d_out; weight [n, d_out, d_in] as in the reference."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, self.weight.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every map applied to every row: [..., d_in] -> [..., n, d_out], as one matmul."""
        return torch.einsum("...d,oed->...oe", x, self.weight.to(x.dtype))


class Transition(nn.Module):
    """Down_i and Up_i between stage i (width d_in) and stage i+1 (width d_out).

    Parametric: down = Linear(RMSNorm(x)); up = Linear(RMSNorm(z)). ``non_param``: down
    expands each feature into d_out / d_in interpolated copies, up averages them back.
    Upsampling of a stage-i position j with coarse vector z = z[up_k[j]] and offset o = o(j):
      simple          u = up(z) at pooled positions (o = 0), 0 elsewhere
      repeat          u = up(z + pos[o mod 16])               (linear, so up(z) + up(pos)[o])
      indexed_matmul  u = up(z) + W[o mod 16] z'              (z' = the normed z)
    """

    def __init__(self, d_in: int, d_out: int, pooling: Pooling, eps: float):
        super().__init__()
        self.d_in, self.d_out, self.pooling = d_in, d_out, pooling
        self.ratio = d_out // d_in
        if not pooling.non_param:
            self.down_norm = RMSNorm(d_in, eps)
            self.trans_down = Linear(d_in, d_out)
            self.up_norm = RMSNorm(d_out, eps)
            self.trans_up = Linear(d_out, d_in)
        if pooling.indexed_matmul:
            self.indexed_linear = IndexedLinear(MAX_OFFSET, d_out, d_in)
            if pooling.non_param:
                self.indexed_norm = RMSNorm(d_out, eps)
        elif pooling.repeat:
            # std 1 like nn.Embedding (the reference's init): added to a unit-RMS normed vector.
            self.pos_encoding = Embedding(MAX_OFFSET, d_out, std=1.0)

    def down(self, e: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        x = gather_rows(e, index.idx)
        if not self.pooling.non_param:
            return self.trans_down(self.down_norm(x))
        if self.ratio == 1:
            return x
        # Output feature f mixes input features f // r and f // r - 1 with weight ((f % r) + 1) / r.
        xe = x.repeat_interleave(self.ratio, dim=-1)
        w = (torch.arange(self.d_out, device=x.device) % self.ratio + 1).to(x.dtype) / self.ratio
        return xe * w + xe.roll(self.ratio, dims=-1) * (1 - w)

    def _up_linear(self, z: torch.Tensor) -> torch.Tensor:
        """The shared (offset-independent) part of Up, on vectors of width d_out."""
        if not self.pooling.non_param:
            return self.trans_up(z)
        return z if self.ratio == 1 else z.unflatten(-1, (self.d_in, self.ratio)).mean(-1)

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        """Stage-(i+1) outputs z [B, K, d_out] -> one vector per stage-i position [B, T, d_in]."""
        # Parameters are only reached through submodule calls: DeepSpeed ZeRO-3 gathers a
        # module's partitioned weights when that module is called, not when they are read.
        p = self.pooling
        n = z if p.non_param else self.up_norm(z)
        shared = self._up_linear(n)
        if p.indexed_matmul:
            # All 16 maps for every coarse vector in one matmul, then each position gathers its
            # row (k, o mod 16): no per-offset loop, no host sync, one static graph. It costs
            # 16 * K / T times the minimal FLOPs of this layer (6x for AU-Net-2: ~1% of the
            # model) and saves only the normed z for backward; grouping rows by offset into
            # padded blocks does fewer FLOPs but saves ~4x more activations.
            y = self.indexed_linear(self.indexed_norm(z) if p.non_param else n)
            slot = index.up_k * MAX_OFFSET + index.offset % MAX_OFFSET
            return gather_rows(y.flatten(1, 2), slot) + gather_rows(shared, index.up_k)
        u = gather_rows(shared, index.up_k)
        if p.repeat:
            pos = self.pos_encoding(torch.arange(MAX_OFFSET, device=z.device))
            return u + self._up_linear(pos.to(n.dtype))[index.offset % MAX_OFFSET]
        return u * (index.offset == 0)[..., None].to(u.dtype)


    def down_step(self, e: torch.Tensor) -> torch.Tensor:
        """Decoding: Down for one new pooled position per row, e [b, 1, d_in]."""
        return self.down(e, one_position(len(e), e.device))

    def up_step(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Decoding: Up for one new position per row from its coarse vector z [b, 1, d_out],
        at `offset` [b, 1] from its pooled position."""
        return self.up(z, one_position(len(z), z.device, offset))


_ZEROS: dict[tuple[int, torch.device], torch.Tensor] = {}


def one_position(b: int, device: torch.device, offset: torch.Tensor | None = None) -> PoolIndex:
    """The pooling index of one new position per row: pooled into slot 0 (down), or read from
    slot 0 at `offset` [b, 1] from its pooled position (up)."""
    key = (b, device)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros(b, 1, dtype=torch.long, device=device)
    zero = _ZEROS[key]
    return PoolIndex(zero, torch.ones_like(zero, dtype=torch.bool), zero, zero if offset is None else offset, zero)


def indexed_up_loop(x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Reference semantics of the multi-linear map: y[b, t] = weight[offset[b, t] mod 16] x[b, t],
    one masked matmul per offset, as the reference computes it (data-dependent shapes, one host
    sync per offset). Kept to test and benchmark `Transition` against."""
    out = x.new_zeros(*x.shape[:-1], weight.shape[1])
    slot = offset % weight.shape[0]
    for o in range(weight.shape[0]):
        b, t = torch.where(slot == o)
        if b.numel():
            out[b, t] = x[b, t] @ weight[o].T
    return out
