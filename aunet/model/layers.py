"""Transformer building blocks: RMSNorm, RoPE, attention (routes in `aunet.model.attention`), SwiGLU, a stack.

Every parametrised module initialises itself inside its own constructor (truncated normal,
cut at 3 std), so building under `deepspeed.zero.Init`, which partitions each module's
parameters as soon as its constructor returns, still yields initialised weights.
`reset_parameters()` re-runs the same init (for models built on the meta device).
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts, noop_context_fn
from torch import nn

from aunet.config.model import BlockArgs
from aunet.model.attention import causal_attention
from aunet.model.kv_cache import CachePrefill, CacheStep, LayerCache, StackCache, rope_frequencies


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
    freqs = rope_frequencies(head_dim, theta, device)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent feature pairs (0,1), (2,3), ... of x [B, T, H, D] (the reference's layout);
    cos and sin are [T, D/2] (shared by the batch) or [B, T, D/2] (per row)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int, n_kv_heads: int, out_std: float, std: float | None):
        super().__init__()
        self.head_dim = head_dim
        self.n_heads = dim // head_dim
        self.n_kv_heads = n_kv_heads
        # Q, K and V come from one matmul (one kernel, one weight read); rows are the reference's
        # wq, wk, wv stacked in that order. Every row has the same init (std, or fan_in**-0.5 =
        # dim**-0.5 for all three), so the fused init is the separate ones' distribution.
        self.split = (self.n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim)
        self.wqkv = Linear(dim, sum(self.split), std)
        self.wo = Linear(self.n_heads * head_dim, dim, out_std)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], window: int,
                cache: LayerCache | None = None, step: CacheStep | CachePrefill | None = None) -> torch.Tensor:
        """Training, and the two decoding phases: with a cache and a `CachePrefill`, the same
        causal attention, then each row's keys and values are cached; with a `CacheStep` (one
        new position per row), attention over the row's cached keys."""
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split(self.split, dim=-1)
        q = apply_rope(q.view(B, T, self.n_heads, self.head_dim), *rope).transpose(1, 2)
        k = apply_rope(k.view(B, T, self.n_kv_heads, self.head_dim), *rope).transpose(1, 2)
        v = v.reshape(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if isinstance(step, CacheStep):
            assert cache is not None
            keys, values = cache.append(k, v, step)
            out = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=step.mask,
                                                 enable_gqa=self.n_heads != self.n_kv_heads)
        else:
            out = causal_attention(q, k, v, window)
            if cache is not None:
                assert isinstance(step, CachePrefill)
                cache.prefill(k, v, step.lengths)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, out_std: float, std: float | None):
        super().__init__()
        # The gate (the reference's w1) and the up projection (w3) as one matmul: rows w1 then w3,
        # both initialised with the same std, as when they were two.
        self.w13 = Linear(dim, 2 * hidden, std)
        self.w2 = Linear(hidden, dim, out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


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

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], window: int,
                cache: LayerCache | None = None, step: CacheStep | CachePrefill | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, window, cache, step)
        return x + self.feed_forward(self.ffn_norm(x))


#: What selective checkpointing keeps from a block's forward pass: the outputs of the matrix
#: products (the projections) and of fused attention kernels, the costly part to recompute.
#: Norms, RoPE, SiLU, the gating product and residual adds are recomputed: a few FLOPs per
#: element, while their outputs (two normed inputs, rotated Q and K, SiLU and gated hidden
#: vectors) are a large share of a block's activations.
SAVED_OPS = frozenset(
    getattr(torch.ops.aten, name).default
    for name in ("mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_flash_attention_forward", "_efficient_attention_forward")
    if hasattr(torch.ops.aten, name)
)


def _save_products(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def selective_contexts():
    """`torch.utils.checkpoint`'s context_fn for selective checkpointing (`SAVED_OPS`)."""
    return create_selective_checkpoint_contexts(_save_products)


class Stack(nn.Module):
    """`n_layers` blocks of one stage (an encoder, a decoder or the trunk)."""

    def __init__(self, dim: int, head_dim: int, n_kv_heads: int, n_layers: int, window: int, args: BlockArgs):
        super().__init__()
        self.dim, self.head_dim, self.window, self.rope_theta = dim, head_dim, window, args.rope_theta
        self.layers = nn.ModuleList(Block(dim, head_dim, n_kv_heads, args, i, n_layers) for i in range(n_layers))
        self.checkpointing: str | None = None
        """Activation checkpointing of each block in training: None (keep every activation),
        ``"selective"`` (keep the matmul and attention outputs, recompute the elementwise work
        between them in the backward pass) or ``"full"`` (keep only the block's input, recompute
        all of it)."""

    def forward(self, x: torch.Tensor, cache: StackCache | None = None,
                step: CacheStep | CachePrefill | None = None) -> torch.Tensor:
        """x [B, T, dim]. For decoding, `cache` with a `CachePrefill` (a fresh right-padded
        batch) or a `CacheStep` (x [B, 1, dim]: one new position for every row, written to
        the cache where the step's `active` is set)."""
        if not len(self.layers):
            return x
        if isinstance(step, CacheStep):
            rope = step.rope  # each row's own position, from frequencies computed once per batch
        else:
            rope = rope_tables(x.shape[1], self.head_dim, self.rope_theta, x.device)
        for n, layer in enumerate(self.layers):
            if cache is not None:
                x = layer(x, rope, self.window, cache.layers[n], step)
            elif self.checkpointing and self.training and torch.is_grad_enabled():
                context = selective_contexts if self.checkpointing == "selective" else noop_context_fn
                x = torch.utils.checkpoint.checkpoint(layer, x, rope, self.window, use_reentrant=False, context_fn=context)
            else:
                x = layer(x, rope, self.window)
        return x
