"""``repeat``: every position of a segment receives the segment's coarse vector, plus a learned
embedding of its offset o(j) mod 16."""

from __future__ import annotations

import torch

from aunet.config.model import MAX_OFFSET
from aunet.model.layers import Embedding
from aunet.model.pooling.base import PoolIndex, gather_rows, register
from aunet.model.pooling.projection import NonParametric, Parametric, Projection


class RepeatUp(Projection):
    """u(j) = up(n(z[k]) + pos[o(j) mod 16]), computed as up(n(z))[k] + up(pos)[o] (up is linear)."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        # std 1 like nn.Embedding (the reference's init): added to a unit-RMS normed vector.
        self.pos_encoding = Embedding(MAX_OFFSET, d_out, std=1.0)

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        n = self.norm_up(z)
        u = gather_rows(self.project_up(n), index.up_k)
        pos = self.pos_encoding(torch.arange(MAX_OFFSET, device=z.device))
        return u + self.project_up(pos.to(n.dtype))[index.offset % MAX_OFFSET]

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        return super().params(d_in, d_out) + MAX_OFFSET * d_out


@register("simple_repeat")
class Repeat(RepeatUp, Parametric):
    pass


@register("simple_non_param_repeat")
class RepeatNonParam(RepeatUp, NonParametric):
    pass
