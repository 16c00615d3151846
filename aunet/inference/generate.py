"""Cached hierarchical generation (SPEC section 7).

Each stage keeps a key/value cache per attention layer. A new byte runs the byte-level encoder
and decoder; it climbs to stage i+1 only when its causal level exceeds i (position 0, BOS, is
forced to the full depth), so deeper stages step once per segment they open. Upsampling for a
position uses the last coarse vector at or before it and its offset o(j) mod 16, exactly as the
full forward pass does, so logits match `HierarchicalTransformer.forward` on the same bytes and
levels (fp32, up to float rounding).

Choices where the full forward pass gives no rule:
- `max_seqlens[i+1]`: once stage i+1 holds that many positions, later bytes stop at stage i
  and upsample from the last kept vector (what the full forward pass computes for the first
  positions it keeps). `max_seqlens[0]` bounds the total length: generation stops there.
- Sliding windows: each layer's cache keeps only the last `window` keys and values.
- Prompts in a batch are run one after another (each has its own levels, hence its own pattern
  of stage calls); a batched call returns exactly what separate calls return.
- Levels come from `Segmenter.stream()` (causal levels, SPEC section 2), or, with
  `levels="head"` on a model trained with `lambda_level > 0`, from the level head: the most
  likely level of each new byte given the previous position's features and that byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from aunet.config.model import BOS_ID, MAX_OFFSET
from aunet.model.hierarchical import HierarchicalTransformer
from aunet.model.layers import Stack, apply_rope, causal_attention, rope_tables
from aunet.model.pooling import PoolIndex, pool_index
from aunet.segment.segmenter import Segmenter


class StackCache:
    """Keys and values of every layer of one stack, for one sequence."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.keys: list[torch.Tensor | None] = [None] * len(stack.layers)
        self.values: list[torch.Tensor | None] = [None] * len(stack.layers)
        self.length = 0
        """Positions seen so far (the RoPE position of the next one)."""
        self.freqs: torch.Tensor | None = None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Run one new position x [1, 1, dim] through the stack; returns [1, 1, dim]."""
        stack = self.stack
        if not len(stack.layers):
            self.length += 1
            return x
        if self.freqs is None:
            # As `rope_tables` computes them, so that angles round the same way.
            self.freqs = 1.0 / stack.rope_theta ** (
                torch.arange(0, stack.head_dim, 2, device=x.device, dtype=torch.float32) / stack.head_dim
            )
        angles = torch.tensor([float(self.length)], device=x.device) * self.freqs
        rope = (angles.cos()[None], angles.sin()[None])
        for n, layer in enumerate(stack.layers):
            x = x + self._attend(n, layer.attention, layer.attention_norm(x), rope)
            x = x + layer.feed_forward(layer.ffn_norm(x))
        self.length += 1
        return x

    def prefill(self, x: torch.Tensor, n_valid: int) -> torch.Tensor:
        """Run a whole fresh sequence x [1, T, dim] through the stack as its forward pass does,
        caching the keys and values of the first `n_valid` positions (the rest is padding)."""
        stack = self.stack
        if len(stack.layers):
            T = x.shape[1]
            rope = rope_tables(T, stack.head_dim, stack.rope_theta, x.device)
            for n, layer in enumerate(stack.layers):
                att, h = layer.attention, layer.attention_norm(x)
                q = apply_rope(att.wq(h).view(1, T, att.n_heads, att.head_dim), *rope).transpose(1, 2)
                k = apply_rope(att.wk(h).view(1, T, att.n_kv_heads, att.head_dim), *rope).transpose(1, 2)
                v = att.wv(h).view(1, T, att.n_kv_heads, att.head_dim).transpose(1, 2)
                out = causal_attention(q, k, v, stack.window)
                x = x + att.wo(out.transpose(1, 2).reshape(1, T, -1))
                x = x + layer.feed_forward(layer.ffn_norm(x))
                start = max(0, n_valid - stack.window) if stack.window > 0 else 0
                self.keys[n], self.values[n] = k[:, :, start:n_valid], v[:, :, start:n_valid]
        self.length = n_valid
        return x

    def _attend(self, n: int, att, x: torch.Tensor, rope) -> torch.Tensor:
        q = apply_rope(att.wq(x).view(1, 1, att.n_heads, att.head_dim), *rope).transpose(1, 2)
        k = apply_rope(att.wk(x).view(1, 1, att.n_kv_heads, att.head_dim), *rope).transpose(1, 2)
        v = att.wv(x).view(1, 1, att.n_kv_heads, att.head_dim).transpose(1, 2)
        if self.keys[n] is not None:
            k = torch.cat([self.keys[n], k], dim=2)
            v = torch.cat([self.values[n], v], dim=2)
        window = self.stack.window
        if window > 0 and k.shape[2] > window:
            k, v = k[:, :, -window:], v[:, :, -window:]
        self.keys[n], self.values[n] = k, v
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=att.n_heads != att.n_kv_heads)
        return att.wo(out.transpose(1, 2).reshape(1, 1, -1))


@dataclass
class SequenceState:
    """Everything the generator remembers about one sequence."""

    encoders: list[StackCache]
    trunk: StackCache
    decoders: list[StackCache]
    stream: Any
    last_pooled: list[int]
    """Per transition i: stage-i index of the last position pooled into stage i+1."""
    coarse: list[torch.Tensor | None]
    """Per transition i: output of stage i+1 at its last position (what Up_i reads)."""
    stage_steps: list[int] = field(default_factory=list)
    """Positions processed at each stage 0..L (deeper stages step once per segment)."""
    tokens: list[int] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    hidden: torch.Tensor | None = None
    """Final byte-level features [1, 1, dim] of the last position (input of the level head)."""


_INDEX_CACHE: dict[tuple[int, torch.device], PoolIndex] = {}


def _index(offset: int, device: torch.device) -> PoolIndex:
    """The pooling index of one position `offset` bytes after its pooled position. Upsampling
    reads only offset == 0 and offset mod 16, so offsets >= 16 share 16 cached objects."""
    key = (offset if offset < MAX_OFFSET else MAX_OFFSET + offset % MAX_OFFSET, device)
    if key not in _INDEX_CACHE:
        zero = torch.zeros(1, 1, dtype=torch.long, device=device)
        _INDEX_CACHE[key] = PoolIndex(zero, torch.ones_like(zero, dtype=torch.bool), zero,
                                      torch.full_like(zero, key[0]), zero)
    return _INDEX_CACHE[key]


class Generator:
    """Cached generation from a `HierarchicalTransformer`.

    ``strategy`` is the segmentation strategy list the model was trained with (None for a
    flat model, or to pass levels by hand to `push`). ``levels`` picks where the levels of
    new bytes come from: ``"segmenter"`` (causal levels of `strategy`) or ``"head"`` (the
    model's level head; needs ``lambda_level > 0``).

    >>> gen = Generator(model, {"word1": "1@1"})                     # doctest: +SKIP
    >>> gen.generate([b"The cat", b"Once"], max_bytes=32, temperature=0)  # doctest: +SKIP
    [b' sat ...', b' upon ...']
    """

    def __init__(self, model: HierarchicalTransformer, strategy=None, levels: str = "segmenter"):
        if levels not in ("segmenter", "head"):
            raise ValueError(f"levels must be 'segmenter' or 'head', got {levels!r}")
        if levels == "head" and not hasattr(model, "level_mask"):
            raise ValueError("levels='head' needs a model with a level head (model.lambda_level > 0)")
        self.model = model
        self.level_source = levels
        self.segmenter = Segmenter(strategy) if strategy else None
        L = model.n_levels
        if levels == "segmenter" and self.segmenter is not None and self.segmenter.depth < L:
            raise ValueError(f"the strategy has {self.segmenter.depth} stages, the model pools {L} times")
        self.states: list[SequenceState] = []

    def new_state(self) -> SequenceState:
        m, L = self.model, self.model.n_levels
        return SequenceState(
            encoders=[StackCache(s) for s in m.encoders],
            trunk=StackCache(m.trunk),
            decoders=[StackCache(s) for s in m.decoders],
            stream=self.segmenter.stream() if self.segmenter is not None and self.level_source == "segmenter" else None,
            last_pooled=[0] * L,
            coarse=[None] * L,
            stage_steps=[0] * (L + 1),
        )

    @torch.no_grad()
    def push(self, state: SequenceState, token: int, level: int | None = None) -> torch.Tensor:
        """Append one token to `state` and return the logits [vocab] that predict the next one.

        When not given, the level is the byte's causal segmenter level, or the level head's
        prediction (BOS and the first position always get the full depth)."""
        m, L, args = self.model, self.model.n_levels, self.model.args
        pos0 = state.encoders[0].length if L else state.trunk.length
        if args.max_seqlens[0] != -1 and pos0 >= args.max_seqlens[0]:
            raise ValueError(f"the sequence is full: model.max_seqlens[0] = {args.max_seqlens[0]}")
        causal = 0
        if state.stream is not None and token < 256:  # fed even when `level` is given: stays in sync
            causal = int(state.stream.push(bytes([token]))[0])
        if level is None and self.level_source == "head" and state.hidden is not None:
            next_token = torch.tensor([[token]], device=state.hidden.device)
            level = int(m.level_logits(state.hidden, next_token)[0, 0].argmax())
        elif level is None:
            level = causal
        if pos0 == 0:
            level = L
        level = min(level, L)
        state.tokens.append(token)
        state.levels.append(level)
        device = m.tok_embeddings.weight.device
        x = m.tok_embeddings(torch.tensor([[token]], device=device))
        if L == 0:
            state.stage_steps[0] += 1
            state.hidden = state.trunk.step(x)
            return m.vocab(m.vocab_norm(state.hidden))[0, 0]
        skips, top = [], 0
        for i in range(L):
            here = state.encoders[i].length
            e = state.encoders[i].step(x)
            state.stage_steps[i] += 1
            skips.append(e)
            limit = args.max_seqlens[i + 1]
            deeper = state.encoders[i + 1].length if i + 1 < L else state.trunk.length
            if level > i and (limit == -1 or deeper < limit):
                state.last_pooled[i] = here
                x = m.transitions[i].down(e, _index(0, device))
                top = i + 1
            else:
                break
        if top == L:
            state.coarse[L - 1] = state.trunk.step(x)
            state.stage_steps[L] += 1
        for i in reversed(range(min(top, L - 1) + 1)):
            offset = state.encoders[i].length - 1 - state.last_pooled[i]
            u = m.transitions[i].up(state.coarse[i], _index(offset, device))
            z = state.decoders[i].step(skips[i] + u if args.residuals[i] else u)
            if i >= 1:
                state.coarse[i - 1] = z
        state.hidden = z
        return m.vocab(m.vocab_norm(z))[0, 0]

    def prefill(self, prompts: list[bytes], bos: bool = True) -> list[torch.Tensor]:
        """Start one sequence per prompt (BOS first when `bos`); returns each one's last logits.

        Each prompt runs as one full forward pass that fills the caches (byte by byte with
        the level head, whose levels depend on the features of the previous byte)."""
        self.states, out = [], []
        for prompt in prompts:
            state = self.new_state()
            tokens = ([BOS_ID] if bos else []) + list(bytes(prompt))
            if not tokens:
                raise ValueError("an empty prompt needs bos=True")
            if self.level_source == "head":
                for t in tokens:
                    logits = self.push(state, t)
            else:
                logits = self._prefill_one(state, tokens)
            self.states.append(state)
            out.append(logits)
        return out

    @torch.no_grad()
    def _prefill_one(self, state: SequenceState, tokens: list[int]) -> torch.Tensor:
        m, L, args = self.model, self.model.n_levels, self.model.args
        T = len(tokens)
        if args.max_seqlens[0] != -1 and T > args.max_seqlens[0]:
            raise ValueError(f"a prompt of {T} tokens is longer than model.max_seqlens[0] = {args.max_seqlens[0]}")
        if state.stream is not None:
            text = bytes(t for t in tokens if t < 256)
            causal = iter(state.stream.push(text).tolist())
            levels = [next(causal) if t < 256 else 0 for t in tokens]
        else:
            levels = [0] * T
        levels = [L] + [min(v, L) for v in levels[1:]]
        state.tokens, state.levels = list(tokens), list(levels)
        device = m.tok_embeddings.weight.device
        x = m.tok_embeddings(torch.tensor([tokens], device=device))
        if L == 0:
            state.stage_steps[0] = T
            state.hidden = state.trunk.prefill(x, T)[:, -1:]
            return m.vocab(m.vocab_norm(state.hidden))[0, 0]
        lev = torch.tensor([levels], device=device)
        lengths = args.stage_lengths(T)
        valid, skips, indices = [T], [], []
        for i in range(L):
            skips.append(state.encoders[i].prefill(x, valid[i]))
            index = pool_index(lev, i, lengths[i + 1])
            indices.append(index)
            valid.append(int(index.valid[0].sum()))
            state.last_pooled[i] = int(index.idx[0, valid[i + 1] - 1])
            x = m.transitions[i].down(skips[i], index)
            lev = index.levels
        z = state.trunk.prefill(x, valid[L])
        state.coarse[L - 1] = z[:, valid[L] - 1: valid[L]]
        for i in reversed(range(L)):
            u = m.transitions[i].up(z, indices[i])
            z = state.decoders[i].prefill(skips[i] + u if args.residuals[i] else u, valid[i])
            if i >= 1:
                state.coarse[i - 1] = z[:, valid[i] - 1: valid[i]]
        state.stage_steps = valid
        state.hidden = z[:, -1:]
        return m.vocab(m.vocab_norm(state.hidden))[0, 0]

    def step(self, tokens: list[int]) -> list[torch.Tensor]:
        """Append one token to every sequence of the last `prefill`; returns the new logits."""
        if len(tokens) != len(self.states):
            raise ValueError(f"{len(tokens)} tokens for {len(self.states)} sequences")
        return [self.push(s, t) for s, t in zip(self.states, tokens)]

    @torch.no_grad()
    def generate(
        self,
        prompts: list[bytes],
        max_bytes: int,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop: list[bytes] | tuple = (),
        seed: int = 0,
    ) -> list[bytes]:
        """Up to `max_bytes` new bytes per prompt (BOS/EOS are never sampled). temperature 0 is
        greedy. Each prompt samples with its own generator seeded by `seed`, so a batch returns
        what separate calls return. Output stops after the first stop string (which is kept in
        the output) or when the model's max_seqlens[0] is reached. Decode with `decode_utf8`."""
        return [bytes(self._sample(state, logits, max_bytes, temperature, top_k, top_p, stop, seed))
                for logits, state in zip(self.prefill(prompts), list(self.states))]

    def stream(self, prompt: bytes, max_bytes: int, **sampling) -> Iterator[int]:
        """The bytes `generate([prompt], max_bytes, **sampling)` returns, one at a time as they
        are sampled (`sampling`: temperature, top_k, top_p, stop, seed, as for `generate`)."""
        (logits,) = self.prefill([prompt])
        return self._sample(self.states[0], logits, max_bytes, **sampling)

    def _sample(self, state: SequenceState, logits: torch.Tensor, max_bytes: int, temperature: float = 0.0, top_k: int = 0,
                top_p: float = 1.0, stop=(), seed: int = 0) -> Iterator[int]:
        """The one sampling loop: each prompt samples with its own generator seeded by `seed`."""
        stops = [s.encode() if isinstance(s, str) else bytes(s) for s in stop]
        rng = torch.Generator(device="cpu").manual_seed(seed)
        out = bytearray()
        limit = self.model.args.max_seqlens[0]
        for n in range(max_bytes):
            b = sample_byte(logits, temperature, top_k, top_p, rng)
            out.append(b)
            yield b
            if any(out.endswith(s) for s in stops if s):
                return
            if n + 1 == max_bytes or (limit != -1 and len(state.tokens) >= limit):
                return
            logits = self.push(state, b)


def sample_byte(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, rng: torch.Generator) -> int:
    """One byte from logits [vocab] (only ids < 256 are candidates)."""
    logits = logits[:256].float().cpu()
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, 256)).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(0) - sorted_p >= top_p  # keep the smallest prefix reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=rng))


def decode_utf8(data: bytes, trim: bool = True) -> str:
    """Text of generated bytes. With `trim`, an incomplete character at the end (a sample cut
    mid-character) is dropped; any other invalid byte becomes U+FFFD.

    >>> decode_utf8("é".encode() + "€".encode()[:2])
    'é'
    """
    if trim:
        for cut in range(1, min(3, len(data)) + 1):
            lead = data[-cut]
            need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 0
            if lead < 0x80 or (need == 0 and lead >= 0xC0):
                break
            if need:
                if need > cut:
                    data = data[:-cut]
                break
    return data.decode("utf-8", errors="replace")
