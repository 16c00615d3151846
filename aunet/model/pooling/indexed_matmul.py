"""``indexed_matmul`` (the paper's multi-linear upsampling, the default): every position of a
segment receives up(z) plus its own linear map of the coarse vector, one map per offset
o(j) mod 16.

All 16 maps are applied to every coarse vector in one matmul, then each position gathers its
row (k, o mod 16): no per-offset loop, no host sync, one static graph. (The reference loops
over the 16 offsets with `torch.where`, one host sync each, and keeps that function out of
torch.compile.) It costs 16 * K / T times the minimal FLOPs of this layer (6x for AU-Net-2:
~1% of the model) and saves only the normed z for backward; grouping rows by offset into
padded blocks does fewer FLOPs but saves ~4x more activations.
"""

from __future__ import annotations

import torch
from torch import nn

from aunet.config.model import MAX_OFFSET
from aunet.model.layers import RMSNorm, trunc_normal_
from aunet.model.pooling.base import PoolIndex, gather_rows, register
from aunet.model.pooling.projection import NonParametric, Parametric, Projection


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


class IndexedMatmulUp(Projection):
    """u(j) = up(n(z[k])) + W[o(j) mod 16] m(z[k]), m = `indexed_input`."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        self.indexed_linear = IndexedLinear(MAX_OFFSET, d_out, d_in)

    def indexed_input(self, z: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """What the offset maps read: the normed coarse vector `n`."""
        return n

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        # Parameters are only reached through submodule calls: DeepSpeed ZeRO-3 gathers a
        # module's partitioned weights when that module is called, not when they are read.
        n = self.norm_up(z)
        y = self.indexed_linear(self.indexed_input(z, n))
        slot = index.up_k * MAX_OFFSET + index.offset % MAX_OFFSET
        return gather_rows(y.flatten(1, 2), slot) + gather_rows(self.project_up(n), index.up_k)

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        return super().params(d_in, d_out) + MAX_OFFSET * d_out * d_in

    @classmethod
    def flops(cls, d_in: int, d_out: int, fine: float, coarse: float) -> float:
        # One (offset-specific) map per stage-i position; the 16 maps computed per coarse
        # vector and the shared up are not counted.
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
