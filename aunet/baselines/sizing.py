"""Size models of different architectures to the same training FLOPs per byte (benches/compare.py).

Each architecture is a template: width ratios scaled by one factor, and depths, of which the
deepest stage's may move by up to two blocks (widths come in steps of 16, too coarse alone for
models this small). Scale and depth are chosen so that the FLOPs estimator (`aunet.model.flops`, forward + backward, useful FLOPs:
deeper stages counted at the share of bytes the segmenter actually pools on the corpus) gives
the per-byte cost closest to a target. A BPE model's cost per byte is its cost per token
divided by the corpus's bytes per token; its sequence holds the tokens of about as many bytes
as the byte-level models' sequences.

Templates (widths rounded to multiples of 16, 16-wide heads; depths in blocks):
- `aunet2`: widths 1 : 3, layers [2, 4] (2 + 4 + 2 blocks), like AU-Net-2 (512/2048, [3, 25]).
- `aunet3`: widths 1 : 2 : 3, layers [1, 2, 3] (1 + 2 + 3 + 2 + 1 blocks).
- `bytes`: a flat byte-level transformer, 8 blocks (AU-Net with L = 0).
- `bpe`: the same flat transformer over BPE tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aunet.config import BlockArgs, ModelArgs
from aunet.model.flops import DEFAULT_STAGE_FRACTIONS, flops_per_byte

HEAD = 16


@dataclass(frozen=True)
class Template:
    name: str
    widths: tuple[float, ...]
    """Stage widths at scale 1 (multiplied by the scale, then rounded to multiples of 16)."""
    layers: tuple[int, ...]
    strategy: dict[str, str] | None
    bpe: bool = False


TEMPLATES = {
    "aunet2": Template("aunet2", (32, 96), (2, 4), {"word1": "1@1"}),
    "aunet3": Template("aunet3", (32, 64, 96), (1, 2, 3), {"word1": "1@1", "word2": "2@1"}),
    "bytes": Template("bytes", (64,), (8,), None),
    "bpe": Template("bpe", (64,), (8,), None, bpe=True),
}


@dataclass
class Sized:
    template: Template
    model: ModelArgs
    seq_len: int
    """Positions per training sequence (bytes, or BPE tokens)."""
    flops_per_byte: float
    """Useful training FLOPs per byte of text (the sizing criterion)."""
    executed_flops_per_byte: float
    """FLOPs per byte actually computed, deeper stages at their static (padded) lengths."""


def build(template: Template, scale: float, seq_len_bytes: int, fractions: tuple[float, ...],
          bytes_per_token: float = 1.0, vocab_size: int = 258, depth_change: int = 0) -> Sized:
    """The model of `template` at `scale` (deepest stage `depth_change` blocks deeper), with its
    FLOPs per byte."""
    layers = [*template.layers[:-1], template.layers[-1] + depth_change]
    dims = [max(HEAD, HEAD * round(w * scale / HEAD)) for w in template.widths]
    n = len(dims)
    seq_len = max(8, round(seq_len_bytes / bytes_per_token)) if template.bpe else seq_len_bytes
    # Deeper stages keep room for twice the mean number of pooled positions (the tail of long
    # runs of short words); longer inputs are cut there, as in the published configs.
    caps = [-1] + [min(seq_len, 16 * math.ceil(2 * f * seq_len / 16)) for f in fractions[1:n]]
    model = ModelArgs(
        dimensions=dims, layers=layers, head_dims=[HEAD] * n, residuals=[True] * (n - 1),
        sliding_windows=[seq_len] * n, max_seqlens=caps, block=BlockArgs(multiple_of=16, rope_theta=10000.0),
        pooling_type="simple_indexed_matmul", vocab_size=vocab_size,
    )
    useful = flops_per_byte(model, seq_len, fractions=_pad(fractions, n)).total / bytes_per_token
    executed = flops_per_byte(model, seq_len, padded=True).total / bytes_per_token
    return Sized(template, model, seq_len, useful, executed)


def size_to(template: Template, target_flops_per_byte: float, seq_len_bytes: int,
            fractions: tuple[float, ...] = DEFAULT_STAGE_FRACTIONS, bytes_per_token: float = 1.0,
            vocab_size: int = 258) -> Sized:
    """The scale (on a grid of 1/32 steps from 1/4 to 32) and deepest-stage depth (the
    template's, +-2) whose FLOPs per byte are closest to the target in log space; within 2% of
    the best, the template's own depth wins."""
    candidates = []
    for change in (0, -1, 1, -2, 2):
        if template.layers[-1] + change < 1:
            continue
        seen = set()
        for k in range(8, 32 * 32 + 1):
            sized = build(template, k / 32, seq_len_bytes, fractions, bytes_per_token, vocab_size, change)
            if tuple(sized.model.dimensions) in seen:
                continue
            seen.add(tuple(sized.model.dimensions))
            candidates.append((abs(math.log(sized.flops_per_byte / target_flops_per_byte)), abs(change), sized))
    best = min(c[0] for c in candidates)
    return min((c for c in candidates if c[0] <= best + 0.02), key=lambda c: (c[1], c[0]))[2]


def _pad(fractions: tuple[float, ...], n: int) -> tuple[float, ...]:
    return tuple(fractions[:n]) + (1.0,) * max(0, n - len(fractions))
