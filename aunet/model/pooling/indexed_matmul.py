"""``indexed_matmul`` (the paper's multi-linear upsampling, the default): every position of a
segment receives up(z) plus its own linear map of the coarse vector, one map per offset
o(j) mod 16.

Only the maps that are used are computed, with static shapes and no host sync. Coarse vector k
needs map s for s < L_k (its segment length; offsets past 15 wrap onto maps already computed).
Sorted by L_k, longest first, the vectors that need map s are a prefix of n_s rows, and since
the segments cover the B*T positions, n_s * (s + 1) <= B*T: map s runs on the first
min(B*K, B*T / (s + 1)) sorted rows, a bound known from the shapes alone. That is
sum_s min(K, T / (s + 1)) rows per batch row instead of 16 K (2.3x fewer FLOPs for AU-Net-2's
first transition); each position then gathers its row. (The reference loops over the 16
offsets with `torch.where`, one host sync each, and keeps that function out of torch.compile;
the previous version here applied all 16 maps to every coarse vector.)
"""

from __future__ import annotations

import torch
from torch import nn

from aunet.config.model import MAX_OFFSET
from aunet.model.layers import RMSNorm, trunc_normal_
from aunet.model.pooling.base import PoolIndex, gather_rows, one_position, register
from aunet.model.pooling.projection import NonParametric, Parametric, Projection


class IndexedLinear(nn.Module):
    """`n` bias-free linear maps d_in -> d_out; weight [n, d_out, d_in] as in the reference."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, self.weight.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor, up_k: torch.Tensor, offset: torch.Tensor, segments: bool = True) -> torch.Tensor:
        """y[b, j] = weight[offset[b, j] mod n] x[b, up_k[b, j]] for coarse rows x [B, K, d_in]:
        [B, T, d_out]. With `segments` (a `pool_index`: each coarse row's positions are
        contiguous with offsets 0, 1, ...), only the maps in use are computed; otherwise
        (decoding: one position per row at any offset) each position gathers its map."""
        w = self.weight.to(x.dtype)
        n = w.shape[0]
        slot = offset % n
        if not segments:
            return torch.einsum("btd,bted->bte", gather_rows(x, up_k), w[slot])
        B, K, _ = x.shape
        T = up_k.shape[1]
        lengths = torch.zeros(B, K, dtype=up_k.dtype, device=up_k.device).scatter_add_(1, up_k, torch.ones_like(up_k))
        order = torch.argsort(lengths.flatten(), descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(B * K, device=order.device))
        rows = x.flatten(0, 1)[order]
        caps = [min(B * K, B * T // (s + 1)) for s in range(n)]
        # unbind, not w[s]: the backward of 16 selects would write 16 zeroed copies of the
        # whole weight; unbind's stacks the 16 gradients once.
        y = torch.cat([rows[:cap] @ ws.T for ws, cap in zip(w.unbind(0), caps)])
        # Where each map's rows start, computed on the device: a tensor made from a host list
        # would be a blocking host-to-device copy in every step.
        cap = (B * T // torch.arange(1, n + 1, device=x.device)).clamp_(max=B * K)
        base = cap.cumsum(0) - cap
        where = base[slot] + rank.view(B, K).gather(1, up_k)
        return y[where]


class IndexedMatmulUp(Projection):
    """u(j) = up(n(z[k])) + W[o(j) mod 16] m(z[k]), m = `indexed_input`."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        self.indexed_linear = IndexedLinear(MAX_OFFSET, d_out, d_in)

    def indexed_input(self, z: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """What the offset maps read: the normed coarse vector `n`."""
        return n

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        return self.up_from(z, index, segments=True)

    def up_step(self, z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        # One position per row at any offset: not the segments `pool_index` makes.
        return self.up_from(z, one_position(len(z), z.device, offset), segments=False)

    def up_from(self, z: torch.Tensor, index: PoolIndex, segments: bool) -> torch.Tensor:
        # Parameters are only reached through submodule calls: DeepSpeed ZeRO-3 gathers a
        # module's partitioned weights when that module is called, not when they are read.
        n = self.norm_up(z)
        y = self.indexed_linear(self.indexed_input(z, n), index.up_k, index.offset, segments=segments)
        return y + gather_rows(self.project_up(n), index.up_k)

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        return super().params(d_in, d_out) + MAX_OFFSET * d_out * d_in

    @classmethod
    def flops(cls, d_in: int, d_out: int, fine: float, coarse: float) -> float:
        # One (offset-specific) map per stage-i position; the rows computed beyond that (the
        # static bound of each map's prefix) and the shared up are not counted.
        return cls.down_flops(d_in, d_out, coarse) + 6 * d_out * d_in * fine


@register("simple_indexed_matmul")
class IndexedMatmul(IndexedMatmulUp, Parametric):
    pass


@register("simple_non_param_indexed_matmul")
class IndexedMatmulNonParam(IndexedMatmulUp, NonParametric):
    """Without a parametric norm before up, the offset maps read the coarse vector through an
    RMSNorm of their own."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        self.indexed_norm = RMSNorm(d_out, eps)

    def indexed_input(self, z: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self.indexed_norm(z)

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        return super().params(d_in, d_out) + d_out
