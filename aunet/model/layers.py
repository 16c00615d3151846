"""Transformer building blocks: RMSNorm, RoPE, sliding-window causal attention, SwiGLU, a stack.

Every parametrised module initialises itself inside its own constructor (truncated normal,
cut at 3 std), so building under `deepspeed.zero.Init`, which partitions each module's
parameters as soon as its constructor returns, still yields initialised weights.
`reset_parameters()` re-runs the same init (for models built on the meta device).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

from aunet.config.model import BlockArgs


def trunc_normal_(weight: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


class Linear(nn.Linear):
    """Bias-free linear layer with a truncated-normal init of a given std (default fan_in**-0.5)."""

    def __init__(self, in_features: int, out_features: int, std: float | None = None):
        # Read by reset_parameters, which nn.Linear.__init__ calls.
        self.init_std = std if std is not None else in_features**-0.5
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, self.init_std)


class Embedding(nn.Embedding):
    def __init__(self, num: int, dim: int, std: float):
        self.init_std = std
        super().__init__(num, dim)

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, self.init_std)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 at least (bf16 sums of squares lose too much), return in the input dtype.
        wide = torch.promote_types(x.dtype, torch.float32)
        return F.rms_norm(x.to(wide), (x.shape[-1],), self.weight.to(wide), self.eps).type_as(x)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(length: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [length, head_dim / 2], for positions 0..length-1 of one stage.

    Computed per forward pass rather than held in a buffer: a stage's length depends on the
    input, and a buffer would have to be rebuilt after meta-device construction.
    """
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent feature pairs (0,1), (2,3), ... of x [B, T, H, D] (the reference's layout)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention over [B, H, T, D] where query t sees keys t-window+1..t (window <= 0: all).

    Three exact routes through scaled_dot_product_attention: plain causal (flash kernels) when
    the window covers the sequence; for long sequences, banded blocks (queries in blocks of
    `window`, each against the 2 * window keys that can reach it), which costs O(T * window)
    instead of O(T^2); otherwise one boolean mask.
    """
    T = q.shape[-2]
    if window <= 0 or window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    if T >= 2 * window:
        return _banded_attention(q, k, v, window)
    pos = torch.arange(T, device=q.device)
    delta = pos[:, None] - pos[None, :]
    mask = (delta >= 0) & (delta < window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: int) -> torch.Tensor:
    T = q.shape[2]
    nb = -(-T // w)
    pad = nb * w - T
    # The first block of queries sees every key before it: plain causal attention.
    first = F.scaled_dot_product_attention(q[:, :, :w], k[:, :, :w], v[:, :, :w], is_causal=True)
    # Query block n >= 1 (positions n*w .. n*w+w-1) sees keys (n-1)*w .. n*w+w-1, through one
    # [w, 2w] band mask shared by all blocks; blocks go into the head dimension, so every call
    # is 4-D and the fused (memory-efficient) kernels apply.
    qb = F.pad(q, (0, 0, 0, pad))[:, :, w:].unflatten(2, (nb - 1, w)).flatten(1, 2)
    kb = F.pad(k, (0, 0, 0, pad)).unfold(2, 2 * w, w).transpose(-1, -2).flatten(1, 2)
    vb = F.pad(v, (0, 0, 0, pad)).unfold(2, 2 * w, w).transpose(-1, -2).flatten(1, 2)
    i = torch.arange(w, device=q.device)[:, None]
    j = torch.arange(2 * w, device=q.device)[None, :]
    band = (j > i) & (j <= i + w)  # key j of the block is position j - w relative to query i
    rest = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=band).unflatten(1, (q.shape[1], nb - 1))
    return torch.cat([first, rest.flatten(2, 3)], dim=2)[:, :, :T]


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, n_kv_heads: int, out_std: float, std: float | None):
        super().__init__()
        self.head_dim = head_dim
        self.n_heads = dim // head_dim
        self.n_kv_heads = n_kv_heads
        self.wq = Linear(dim, self.n_heads * head_dim, std)
        self.wk = Linear(dim, n_kv_heads * head_dim, std)
        self.wv = Linear(dim, n_kv_heads * head_dim, std)
        self.wo = Linear(self.n_heads * head_dim, dim, out_std)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], window: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), *rope)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), *rope)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        out = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), window)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, out_std: float, std: float | None):
        super().__init__()
        self.w1 = Linear(dim, hidden, std)
        self.w3 = Linear(dim, hidden, std)
        self.w2 = Linear(hidden, dim, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, dim: int, head_dim: int, n_kv_heads: int, args: BlockArgs, layer: int, n_layers: int):
        super().__init__()
        hidden = args.ffn_hidden(dim)
        base = args.init_base_std
        factor = args.init_factor(layer, n_layers, dim)
        # Output projections start smaller with depth (lingua's init_std_factor); inputs use
        # fan_in**-0.5 (or the fixed base std).
        self.attention_norm = RMSNorm(dim, args.norm_eps)
        self.attention = Attention(dim, head_dim, n_kv_heads, (base or dim**-0.5) / factor, base)
        self.ffn_norm = RMSNorm(dim, args.norm_eps)
        self.feed_forward = FeedForward(dim, hidden, (base or hidden**-0.5) / factor, base)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], window: int) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, window)
        return x + self.feed_forward(self.ffn_norm(x))


class Stack(nn.Module):
    """`n_layers` blocks of one stage (an encoder, a decoder or the trunk)."""

    def __init__(self, dim: int, head_dim: int, n_kv_heads: int, n_layers: int, window: int, args: BlockArgs):
        super().__init__()
        self.dim, self.head_dim, self.window, self.rope_theta = dim, head_dim, window, args.rope_theta
        self.layers = nn.ModuleList(Block(dim, head_dim, n_kv_heads, args, i, n_layers) for i in range(n_layers))
        self.checkpointing = False
        """Recompute each block's activations in the backward pass (less memory, more compute)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.layers):
            return x
        rope = rope_tables(x.shape[1], self.head_dim, self.rope_theta, x.device)
        for layer in self.layers:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, rope, self.window, use_reentrant=False)
            else:
                x = layer(x, rope, self.window)
        return x
