"""``simple``: the coarse vector goes back up to its pooled position only; the other positions
of the segment receive zeros."""

from __future__ import annotations

import torch

from aunet.model.pooling.base import PoolIndex, gather_rows, register
from aunet.model.pooling.projection import NonParametric, Parametric, Projection


class SimpleUp(Projection):
    """u(j) = up(z[k]) at a pooled position (o(j) = 0), 0 elsewhere."""

    def up(self, z: torch.Tensor, index: PoolIndex) -> torch.Tensor:
        u = gather_rows(self.project_up(self.norm_up(z)), index.up_k)
        return u * (index.offset == 0)[..., None].to(u.dtype)


@register("simple")
class Simple(SimpleUp, Parametric):
    pass


@register("simple_non_param")
class SimpleNonParam(SimpleUp, NonParametric):
    pass
