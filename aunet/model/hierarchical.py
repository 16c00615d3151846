"""The AU-Net: byte encoders pool into coarser stages, a trunk runs on the coarsest, decoders
upsample back to bytes (SPEC section 4).

Module and parameter names follow the reference (tok_embeddings, encoders, transitions, trunk,
decoders, vocab_norm, vocab, level_mask_norm, level_mask) so that state dicts line up, except the
fused block projections (attention.wqkv, feed_forward.w13), which `aunet.model.convert` maps.

Design: one walk. The U-Net is traversed in exactly one place, `_walk` (embed, then per level
encode and pool down, the trunk, then per level upsample and decode). Training, the prefill
of a decoding batch and each decoding step all run it; what differs between them is a route
(`aunet.model.routes`): where positions go between stages (a `PoolIndex` from the levels, or
one new position for the rows that climb) and which cache each stack writes. Every stack, and
every attention layer in it, runs the same code with or without a cache (lingua's pattern), so
a change to the architecture is one edit, and cached logits equal the full pass by
construction. The model owns its decoding state (`new_cache`, `prefill`, `step`); the
generator only decides which rows step with which levels, and samples. Pooling types are
classes behind one interface (`aunet.model.pooling`), so the walk never branches on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aunet.config.model import ModelArgs
from aunet.model.kv_cache import DecodeCache, StackCache
from aunet.model.layers import Embedding, Linear, RMSNorm, Stack
from aunet.model.metrics import nats_over_text
from aunet.model.pooling import build_transition
from aunet.model.routes import FullRoute, PrefillRoute, StepRoute
from aunet.model.lengths import bucketed_length, check_stage_lengths
from aunet.model.lengths import stage_lengths as lengths_for


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
            build_transition(args.pooling_type, dims[i], dims[i + 1], block.norm_eps) for i in range(L)
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

    def set_activation_checkpointing(self, mode: bool | str | None) -> None:
        """Recompute block activations in the backward pass: True or ``"selective"`` keeps each
        block's matmul and attention outputs and recomputes the elementwise work
        (`distributed.selective_activation_checkpointing`); ``"full"`` recomputes whole blocks;
        False/None keeps everything."""
        if mode is True:
            mode = "selective"
        if mode not in (False, None, "selective", "full"):
            raise ValueError(f"activation checkpointing: {mode!r} is not one of True, False, 'selective', 'full'")
        for module in self.modules():
            if hasattr(module, "checkpointing"):
                module.checkpointing = mode or None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        levels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        target_levels: torch.Tensor | None = None,
        target_bytes: torch.Tensor | None = None,
        stage_lengths: Sequence[int] | None = None,
    ):
        """Logits [B, T, vocab] and, when `targets` [B, T] are given, the mean next-token
        cross-entropy (plus lambda_level times the level loss when the level head exists;
        it then needs `target_levels`, the levels of the targets). Targets equal to -100 are
        ignored.

        With `target_bytes` (the bytes each target stands for) a third value comes back:
        (summed nats, bytes of text) of the targets that stand for text, from the same
        cross-entropy as the loss, so training gets its bpb without a second pass over the
        logits and without a host synchronisation.

        `stage_lengths` (plain ints, from `aunet.model.stage_lengths` on the host) sets how many
        positions each stage runs; by default every stage is padded to its `max_seqlens` cap.
        Either way the logits are the same: the lengths only have to hold every row's pooled
        positions, which is what `stage_lengths` computes from the levels."""
        h = self.hidden(tokens, levels, stage_lengths)
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

    def hidden(self, tokens: torch.Tensor, levels: torch.Tensor | None = None,
               stage_lengths: Sequence[int] | None = None) -> torch.Tensor:
        """Final byte-level features [B, T, dimensions[0]] (before the output norm); see
        `forward` for `stage_lengths`."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tuple(tokens.shape)}")
        T = tokens.shape[1]
        limit = self.args.max_seqlens[0]
        if limit != -1 and T > limit:
            raise ValueError(f"input of {T} positions is longer than model.max_seqlens[0] = {limit}")
        if self.n_levels:
            levels = self._check_levels(tokens, levels)
        lengths = self.args.stage_lengths(T) if stage_lengths is None else check_stage_lengths(stage_lengths, self.args, T)
        return self._walk(self.tok_embeddings(tokens), FullRoute(levels, lengths))

    def _walk(self, x: torch.Tensor, route: FullRoute | StepRoute) -> torch.Tensor:
        """The one traversal of the U-Net (see the module doc); `route` is a `FullRoute`,
        `PrefillRoute` or `StepRoute`. Stack caches are ordered as in `DecodeCache.stacks`."""
        L = self.n_levels
        skips = []
        for i in range(L):
            skips.append(self.encoders[i](x, *route.cache(i, i)))
            if not route.enters(i + 1):
                break
            x = route.down(i, skips[i], self.transitions[i])
        z = self.trunk(x, *route.cache(L, L)) if route.enters(L) else None
        for i in reversed(range(L)):
            if route.enters(i):
                u = route.up(i, z, self.transitions[i])
                z = self.decoders[i](skips[i] + u if self.args.residuals[i] else u, *route.cache(L + 1 + i, i))
        return route.finish(z)

    # --- decoding -----------------------------------------------------------------------

    def new_cache(self, batch: int, capacity: int) -> DecodeCache:
        """An empty decoding state for `batch` sequences, with `capacity` positions reserved
        per stage (capped by `max_seqlens`; a stack with a shorter sliding window keeps a ring
        of `window` slots). `DecodeCache.grow` makes more room (a new shape)."""
        L, args = self.n_levels, self.args
        weight = self.tok_embeddings.weight
        stacks = [*self.encoders, self.trunk, *self.decoders]
        stage = [*range(L), L, *range(L)]

        def room(i: int) -> int:
            limit = args.max_seqlens[i]
            return capacity if limit == -1 else max(1, min(capacity, limit))

        caches = [StackCache(s, batch, room(i), weight.device, weight.dtype) for s, i in zip(stacks, stage)]
        coarse = [weight.new_zeros(batch, 1, args.dimensions[i + 1]) for i in range(L)]
        return DecodeCache(caches, coarse, weight.new_zeros(batch, 1, args.dimensions[0]))

    def decode_levels(self, levels: Sequence[int] | np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The levels decoding runs new positions with (numpy, on the host, as `_check_levels`
        does on the device): levels above L count as L, and position 0 opens a segment at
        every stage."""
        L = self.n_levels
        out = np.minimum(np.asarray(levels, dtype=np.int64), L)
        out[np.asarray(positions) == 0] = L
        return out

    def check_prompt(self, length: int) -> None:
        """ValueError unless a prompt of `length` tokens fits under `max_seqlens[0]`."""
        limit = self.args.max_seqlens[0]
        if limit != -1 and length > limit:
            raise ValueError(f"a prompt of {length} tokens is longer than model.max_seqlens[0] = {limit}")

    def check_room(self, lengths: np.ndarray) -> None:
        """ValueError unless sequences of `lengths` tokens can each take one more under `max_seqlens[0]`."""
        limit = self.args.max_seqlens[0]
        if limit != -1 and (np.asarray(lengths) >= limit).any():
            raise ValueError(f"the sequence is full: model.max_seqlens[0] = {limit}")

    def prefill(self, tokens: Sequence[Sequence[int]], levels: Sequence[Sequence[int]] | None,
                cache: DecodeCache) -> torch.Tensor:
        """Start every sequence of a fresh `cache` with its prompt (token ids, levels per
        token; levels may be None for a flat model): one right-padded pass that fills every
        stack's cache. Returns the logits [B, vocab] that predict each row's next token."""
        lengths = [len(t) for t in tokens]
        if len(lengths) != cache.batch or not all(lengths):
            raise ValueError(f"prefill needs one non-empty prompt per row of the cache ({cache.batch})")
        longest = max(lengths)
        self.check_prompt(longest)
        # Right-padded to a bucket, every stage run on what the prompts need: prompts of any
        # length share a bounded set of shapes (compiled kernels, FlexAttention masks).
        tok = np.zeros((len(tokens), bucketed_length(longest, self.args)), dtype=np.int64)
        lev = np.zeros_like(tok)
        for b, n in enumerate(lengths):
            tok[b, :n] = tokens[b]
            if levels is not None:
                lev[b, :n] = levels[b]
        tok_dev, lev_dev = torch.from_numpy(tok).to(cache.device), torch.from_numpy(lev).to(cache.device)
        if self.n_levels:
            lev_dev = self._check_levels(tok_dev, lev_dev)
        route = PrefillRoute(lev_dev, lengths_for(lev, self.args), lengths, cache)
        h = self._walk(self.tok_embeddings(tok_dev), route)
        return self.vocab(self.vocab_norm(h))[:, 0]

    def step_levels(self, tokens: torch.Tensor, levels: torch.Tensor | None, cache: DecodeCache) -> torch.Tensor:
        """The levels [B] (device) a step runs `tokens` [B] with: `levels` (None: the level
        head's prediction from each row's last features, or 0 for a model without one), levels
        above L counting as L, and L at position 0 (a row's first position opens a segment at
        every stage)."""
        L = self.n_levels
        if levels is None:
            if hasattr(self, "level_mask"):
                levels = self.level_logits(cache.hidden, tokens[:, None])[:, 0].argmax(-1)
            else:
                levels = torch.zeros_like(tokens)
        return torch.where(cache.lengths[0] == 0, L, levels.clamp(max=L))

    def step(self, tokens: torch.Tensor, levels: torch.Tensor | None, active: torch.Tensor, cache: DecodeCache,
             depth: int | None = None) -> torch.Tensor:
        """Append one token to every `active` row: `tokens`, `levels` (see `step_levels`) and
        `active` are device tensors [B]; returns the next-token logits [B, vocab] (rows not
        active get logits that mean nothing, and their state does not change). Shapes never
        depend on the data, and nothing is read back to the host, so the step compiles to one
        graph and can be captured as a CUDA graph. A deeper stage updates only the rows whose
        new token opens a segment there and whose stage has room under `max_seqlens`; `depth`
        (default L) skips the stages below it when the caller knows no row climbs there."""
        levels = self.step_levels(tokens, levels, cache)
        route = StepRoute(self.args, cache, levels, active, self.n_levels if depth is None else depth)
        z = self._walk(self.tok_embeddings(tokens[:, None]), route)
        return self.vocab(self.vocab_norm(z))[:, 0]

    def _check_levels(self, tokens: torch.Tensor, levels: torch.Tensor | None) -> torch.Tensor:
        if levels is None or levels.shape != tokens.shape:
            got = None if levels is None else tuple(levels.shape)
            raise ValueError(f"levels must have the shape of tokens {tuple(tokens.shape)}, got {got}")
        L = self.n_levels
        # Levels above L pool at every stage, like L. Position 0 opens a segment at every stage,
        # so every position has a pooled position at or before it (no vector from the future).
        levels = levels.long().clamp(max=L)
        return torch.cat([levels.new_full((levels.shape[0], 1), L), levels[:, 1:]], dim=1)
