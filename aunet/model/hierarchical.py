"""The AU-Net: byte encoders pool into coarser stages, a trunk runs on the coarsest, decoders
upsample back to bytes (SPEC section 4).

Module and parameter names follow the reference (tok_embeddings, encoders, transitions, trunk,
decoders, vocab_norm, vocab, level_mask_norm, level_mask) so that state dicts line up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aunet.config.model import ModelArgs
from aunet.model.layers import Embedding, Linear, RMSNorm, Stack
from aunet.model.metrics import nats_over_text
from aunet.model.pooling import PoolIndex, Transition, pool_index


class HierarchicalTransformer(nn.Module):
    """AU-Net with L = len(args.dimensions) - 1 pooling levels (L = 0: a flat transformer).

    Weights are initialised on construction with the global RNG; seed it (``args.seed``)
    first for reproducible weights.

    >>> model = HierarchicalTransformer(ModelArgs(dimensions=[32, 64], layers=[1, 1], head_dims=[16, 16]))
    >>> tokens = torch.randint(0, 256, (2, 24))
    >>> levels = (torch.rand(2, 24) < 0.2).long()
    >>> logits, loss = model(tokens, levels, targets=tokens)
    >>> logits.shape
    torch.Size([2, 24, 258])
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        dims, L, block = args.dimensions, args.n_levels, args.block

        def stack(i: int) -> Stack:
            return Stack(dims[i], args.head_dims[i], args.n_kv_heads(i), args.layers[i], args.sliding_windows[i], block)

        self.tok_embeddings = Embedding(args.vocab_size, dims[0], std=dims[0] ** -0.5)
        self.encoders = nn.ModuleList(stack(i) for i in range(L))
        self.transitions = nn.ModuleList(
            Transition(dims[i], dims[i + 1], args.pooling, block.norm_eps) for i in range(L)
        )
        self.trunk = stack(L)
        self.decoders = nn.ModuleList(stack(i) for i in range(L))
        self.vocab_norm = RMSNorm(dims[0], args.norm_eps)
        self.vocab = Linear(dims[0], args.vocab_size, std=dims[0] ** -0.5)
        if args.lambda_level > 0:
            self.level_mask_norm = RMSNorm(2 * dims[0], args.norm_eps)
            self.level_mask = Linear(2 * dims[0], L + 1)

    @property
    def n_levels(self) -> int:
        return self.args.n_levels

    def init_weights(self) -> None:
        """Re-run every module's initialisation (after building on the meta device and
        `to_empty`; construction already initialises)."""
        with torch.no_grad():
            for module in self.modules():
                if module is not self and hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute block activations in the backward pass (`distributed.selective_activation_checkpointing`)."""
        for module in self.modules():
            if hasattr(module, "checkpointing"):
                module.checkpointing = enabled

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        levels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        target_levels: torch.Tensor | None = None,
        target_bytes: torch.Tensor | None = None,
    ):
        """Logits [B, T, vocab] and, when `targets` [B, T] are given, the mean next-token
        cross-entropy (plus lambda_level times the level loss when the level head exists;
        it then needs `target_levels`, the levels of the targets). Targets equal to -100 are
        ignored.

        With `target_bytes` (the bytes each target stands for) a third value comes back:
        (summed nats, bytes of text) of the targets that stand for text, from the same
        cross-entropy as the loss, so training gets its bpb without a second pass over the
        logits and without a host synchronisation."""
        h = self.hidden(tokens, levels)
        logits = self.vocab(self.vocab_norm(h))
        if targets is None:
            return logits, None
        flat = targets.flatten()
        nll = F.cross_entropy(logits.flatten(0, 1).float(), flat, reduction="none")  # 0 where ignored
        loss = nll.sum() / (flat != -100).sum()
        if self.args.lambda_level > 0:
            if target_levels is None:
                raise ValueError("lambda_level > 0: forward needs target_levels (the levels of the targets)")
            level_targets = torch.where(targets >= 0, target_levels.long().clamp(max=self.n_levels), -100)
            level_logits = self.level_logits(h, targets)
            loss = loss + self.args.lambda_level * F.cross_entropy(
                level_logits.flatten(0, 1).float(), level_targets.flatten()
            )
        if target_bytes is None:
            return logits, loss
        return logits, loss, nats_over_text(nll.detach(), targets, target_bytes)

    def level_logits(self, h: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        """Logits over the level (0..L) of the next position, from the final features `h` and
        the embedding of the next token (what generation knows once it has sampled it)."""
        emb = self.tok_embeddings(next_tokens.clamp(min=0))
        return self.level_mask(self.level_mask_norm(torch.cat([h, emb.to(h.dtype)], dim=-1)))

    def hidden(self, tokens: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
        """Final byte-level features [B, T, dimensions[0]] (before the output norm)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tuple(tokens.shape)}")
        T = tokens.shape[1]
        limit = self.args.max_seqlens[0]
        if limit != -1 and T > limit:
            raise ValueError(f"input of {T} positions is longer than model.max_seqlens[0] = {limit}")
        x = self.tok_embeddings(tokens)
        L = self.n_levels
        if L == 0:
            return self.trunk(x)
        levels = self._check_levels(tokens, levels)
        lengths = self.args.stage_lengths(T)
        indices: list[PoolIndex] = []
        skips: list[torch.Tensor] = []
        for i in range(L):
            x = self.encoders[i](x)
            skips.append(x)
            indices.append(pool_index(levels, i, lengths[i + 1]))
            x = self.transitions[i].down(x, indices[i])
            levels = indices[i].levels
        x = self.trunk(x)
        for i in reversed(range(L)):
            u = self.transitions[i].up(x, indices[i])
            x = self.decoders[i](skips[i] + u if self.args.residuals[i] else u)
        return x

    def _check_levels(self, tokens: torch.Tensor, levels: torch.Tensor | None) -> torch.Tensor:
        if levels is None or levels.shape != tokens.shape:
            got = None if levels is None else tuple(levels.shape)
            raise ValueError(f"levels must have the shape of tokens {tuple(tokens.shape)}, got {got}")
        L = self.n_levels
        # Levels above L pool at every stage, like L. Position 0 opens a segment at every stage,
        # so every position has a pooled position at or before it (no vector from the future).
        levels = levels.long().clamp(max=L)
        return torch.cat([levels.new_full((levels.shape[0], 1), L), levels[:, 1:]], dim=1)
