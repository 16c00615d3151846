"""Causal sliding-window attention: query t attends to keys t-window+1..t (window <= 0: all of them).

One entry point, `causal_attention(q, k, v, window, impl="auto")`, with several exact routes:

- ``"sdpa"``: the CPU route, everything through `scaled_dot_product_attention`. Plain
  `is_causal` when the window covers the sequence; banded blocks when the sequence is at least
  twice the window; otherwise one boolean mask.
- ``"banded"``: banded blocks for every window shorter than the sequence.
- ``"masked"``: one dense [T, T] boolean mask for every window shorter than the sequence.
- ``"flex"``: FlexAttention with a block-sparse sliding-window causal mask, for every window
  (a window covering the sequence becomes the plain causal mask). On CUDA it goes through
  `torch.compile(flex_attention)`, the fused Triton kernel; on other devices through PyTorch's
  unfused FlexAttention reference (which has no backward on CPU), so tests can run it.
- ``"auto"``: on CUDA, plain `is_causal` SDPA (flash) when the window covers the sequence, and
  ``"flex"`` otherwise, provided the fused kernel takes the shapes; every other case, and
  every other device, takes ``"sdpa"``, so CPU numerics do not depend on this module's CUDA code.

The environment variable ``AUNET_ATTENTION`` (read once, at import) sets what ``"auto"``
means: ``sdpa``, ``banded``, ``masked`` or ``flex`` force that route everywhere (``sdpa``
is the way back to the pre-FlexAttention behaviour on a GPU), ``auto`` or unset keeps the
device-based choice. An explicit ``impl`` argument other than ``"auto"`` ignores it. Forced
routes are taken as asked, also where they cannot run (FlexAttention's CUDA kernel needs head
dimensions of at least 16; its CPU reference has no backward).

All route choices depend on Python-level facts only (device type, dtype, static sizes), and
the block masks FlexAttention needs are built from the sequence length and window alone, so
the forward pass has no host syncs and traces under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

IMPLS = ("auto", "sdpa", "banded", "masked", "flex")

_ENV = "AUNET_ATTENTION"
_FORCED = os.environ.get(_ENV, "auto").strip().lower() or "auto"
if _FORCED not in IMPLS:
    raise ValueError(f"{_ENV}={os.environ[_ENV]!r}: expected one of {', '.join(IMPLS)}")

FLEX_BLOCK = 128
"""Block size of the FlexAttention block masks (its default sparse block size)."""

_FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     impl: str = "auto") -> torch.Tensor:
    """Causal attention over q [B, H, T, D] and k, v [B, H_kv, T, D] (H a multiple of H_kv,
    grouped-query attention when H_kv < H) where query t sees keys t-window+1..t; window <= 0
    means full causal attention.

    ``impl`` picks the route: ``"auto"`` (default) chooses by device, FlexAttention on CUDA
    for windows shorter than the sequence and plain causal SDPA (flash) for the others, the
    SDPA routes of ``"sdpa"`` elsewhere; ``"sdpa"``, ``"banded"``, ``"masked"`` and ``"flex"``
    force one route (see this module's docstring). Setting the environment variable
    ``AUNET_ATTENTION`` to one of those names before import forces it for ``"auto"`` too,
    e.g. ``AUNET_ATTENTION=sdpa`` restores the SDPA-only behaviour on GPUs.
    """
    route = _resolve(q, k, window, impl)
    T = q.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if route == "flex":
        return _flex_attention(q, k, v, window)
    if window <= 0 or window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    if route == "banded" or (route == "sdpa" and T >= 2 * window):
        return _banded_attention(q, k, v, window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_window_mask(T, window, q.device))


def _resolve(q: torch.Tensor, k: torch.Tensor, window: int, impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"attention impl {impl!r}: expected one of {', '.join(IMPLS)}")
    if impl == "auto":
        impl = _FORCED
    if impl != "auto":
        return impl
    if q.device.type == "cuda" and 0 < window < q.shape[-2] and _fused_flex_fits(q, k):
        return "flex"
    return "sdpa"


def _fused_flex_fits(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the fused (Triton) FlexAttention kernel takes these shapes. It needs head
    dimensions of at least 16, a floating dtype it has templates for, and, below one block
    of queries, it switches to a decoding kernel that only groups a power-of-2 number of query
    heads per key head; a sequence that short gains nothing from block sparsity anyway."""
    groups = q.shape[1] // k.shape[1]
    return (q.shape[-1] >= 16 and q.dtype in _FLEX_DTYPES and q.shape[-2] >= FLEX_BLOCK
            and groups & (groups - 1) == 0)


def _window_mask(T: int, window: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(T, device=device)
    delta = pos[:, None] - pos[None, :]
    return (delta >= 0) & (delta < window)


def _banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: int) -> torch.Tensor:
    """Exact sliding-window attention in O(T * w): queries in blocks of w, each block against the
    2w keys that can reach it. Needs 0 < w < T and as many key heads as query heads."""
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


# ---------------------------------------------------------------------------------------------
# FlexAttention


@functools.lru_cache(maxsize=None)
def window_mask_mod(window: int) -> Callable:
    """The FlexAttention mask_mod of causal attention with this window (<= 0: unlimited). One
    function object per window, so compiled kernels keyed on it are reused."""
    if window <= 0:
        def causal(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx
        return causal

    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)
    return sliding_window


_BLOCK_MASKS: dict[tuple[int, int, torch.device], object] = {}


def window_block_mask(T: int, window: int, device: torch.device):
    """The FlexAttention BlockMask of causal attention over T positions with this window,
    shared by every batch element and head. A window covering the sequence is the causal mask.

    Shapes are static, so masks are cached per (T, window, device) in eager mode. Under
    torch.compile the mask is built inside the graph instead, from sizes only (no host sync),
    since a cache filled during tracing would hold traced tensors."""
    from torch.nn.attention.flex_attention import create_block_mask

    window = window if 0 < window < T else 0
    if torch.compiler.is_compiling():
        # Dynamo would trace through the lru_cache anyway (and warn): call the function under it.
        mask_mod = window_mask_mod.__wrapped__(window)
        return create_block_mask(mask_mod, None, None, T, T, device=device, BLOCK_SIZE=FLEX_BLOCK)
    key = (T, window, torch.device(device))
    mask = _BLOCK_MASKS.get(key)
    if mask is None:
        mask = create_block_mask(window_mask_mod(window), None, None, T, T, device=device, BLOCK_SIZE=FLEX_BLOCK)
        _BLOCK_MASKS[key] = mask
    return mask


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """`flex_attention` compiled once (its fused kernels exist only under torch.compile). Shapes
    are static per model stage, so no dynamic-shape kernels are asked for."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    # Under an outer torch.compile the plain function is traced (the outer graph gets the fused
    # kernel); in eager mode only CUDA has a fused kernel worth compiling for.
    fused = q.device.type == "cuda" and not torch.compiler.is_compiling()
    fn = _compiled_flex() if fused else cast(Callable[..., torch.Tensor], flex_attention)
    mask = window_block_mask(q.shape[-2], window, q.device)
    return fn(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
