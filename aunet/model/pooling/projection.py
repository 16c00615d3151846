"""The two ways a pooled vector changes width (the ``non_param`` option, or not), shared by the
pooling types: down d_in -> d_out on each pooled vector, and the offset-independent part of
up, d_out -> d_in."""

from __future__ import annotations

import torch

from aunet.model.layers import Linear, RMSNorm
from aunet.model.pooling.base import Transition


class Projection(Transition):
    """A `Transition` whose up passes through `norm_up` then `project_up` (the part every
    position of a segment shares)."""

    def norm_up(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project_up(self, n: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def projection_params(cls, d_in: int, d_out: int) -> int:
        raise NotImplementedError

    @classmethod
    def down_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        raise NotImplementedError

    @classmethod
    def up_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        """FLOPs of `project_up` once per coarse vector."""
        raise NotImplementedError

    @classmethod
    def params(cls, d_in: int, d_out: int) -> int:
        return cls.projection_params(d_in, d_out)

    @classmethod
    def flops(cls, d_in: int, d_out: int, fine: float, coarse: float) -> float:
        """Down and up once per coarse vector (a type with per-position work adds it)."""
        return cls.down_flops(d_in, d_out, coarse) + cls.up_flops(d_in, d_out, coarse)


class Parametric(Projection):
    """down = Linear(RMSNorm(x)); up = Linear(RMSNorm(z))."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        self.down_norm = RMSNorm(d_in, eps)
        self.trans_down = Linear(d_in, d_out)
        self.up_norm = RMSNorm(d_out, eps)
        self.trans_up = Linear(d_out, d_in)

    def project_down(self, x: torch.Tensor) -> torch.Tensor:
        return self.trans_down(self.down_norm(x))

    def norm_up(self, z: torch.Tensor) -> torch.Tensor:
        return self.up_norm(z)

    def project_up(self, n: torch.Tensor) -> torch.Tensor:
        return self.trans_up(n)

    @classmethod
    def projection_params(cls, d_in: int, d_out: int) -> int:
        return d_in + 2 * d_in * d_out + d_out

    @classmethod
    def down_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        return 6 * d_in * d_out * coarse

    @classmethod
    def up_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        return 6 * d_out * d_in * coarse


class NonParametric(Projection):
    """Parameter-free: down expands each feature into d_out / d_in interpolated copies (the
    reference's interleaving), up averages them back. Needs d_out a multiple of d_in."""

    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__(d_in, d_out, eps)
        self.ratio = d_out // d_in

    def project_down(self, x: torch.Tensor) -> torch.Tensor:
        if self.ratio == 1:
            return x
        # Output feature f mixes input features f // r and f // r - 1 with weight ((f % r) + 1) / r.
        xe = x.repeat_interleave(self.ratio, dim=-1)
        w = (torch.arange(self.d_out, device=x.device) % self.ratio + 1).to(x.dtype) / self.ratio
        return xe * w + xe.roll(self.ratio, dims=-1) * (1 - w)

    def norm_up(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def project_up(self, n: torch.Tensor) -> torch.Tensor:
        return n if self.ratio == 1 else n.unflatten(-1, (self.d_in, self.ratio)).mean(-1)

    @classmethod
    def projection_params(cls, d_in: int, d_out: int) -> int:
        return 0

    @classmethod
    def down_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        return 0.0

    @classmethod
    def up_flops(cls, d_in: int, d_out: int, coarse: float) -> float:
        return 0.0
