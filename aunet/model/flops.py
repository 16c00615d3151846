"""Parameter count and training FLOPs per byte of an AU-Net, from its `ModelArgs` alone.

`param_count` is exact (a test compares it with a built model). `flops_per_byte` counts
forward + backward matmul FLOPs (6 per weight per position: 2 forward, 4 backward) and
attention score/value FLOPs (12 * width * mean keys attended per position), per input byte.
Deeper stages see a fraction of the positions: by default the expected share of pooled bytes
(`DEFAULT_STAGE_FRACTIONS`: word1 opens a segment about every 5.5 bytes of English or code,
each further `word` level halves that), capped by `max_seqlens`; with ``padded=True`` the
static stage lengths that the model actually computes on (the reference's accounting, which
counts padding). `batch_flops` counts one batch both ways: useful FLOPs on each row's real
positions, executed FLOPs on the stage lengths the model runs. Transitions count as model FLOPs: down and up once per coarse vector, and
the multi-linear map once per stage-i position (our implementation computes it for all 16
offsets of every coarse vector, which is not counted). Embedding lookups and elementwise work
are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from aunet.config.model import ModelArgs
from aunet.model.pooling import pooling_class

#: Expected share of byte positions reaching stage i (1 at the byte level).
DEFAULT_STAGE_FRACTIONS = (1.0, 1 / 5.5, 1 / 11, 1 / 22, 1 / 44)


def block_params(args: ModelArgs, stage: int) -> int:
    """Parameters of one transformer block of `stage`."""
    d, hd = args.dimensions[stage], args.head_dims[stage]
    kv = args.n_kv_heads(stage) * hd
    return 2 * d * d + 2 * d * kv + 3 * d * args.block.ffn_hidden(d) + 2 * d


def transition_params(args: ModelArgs, i: int) -> int:
    """Parameters of the pooling transition between stage i and stage i+1."""
    return pooling_class(args.pooling_type).params(args.dimensions[i], args.dimensions[i + 1])


def param_count(args: ModelArgs, embeddings: bool = True) -> int:
    """Exact number of parameters of `HierarchicalTransformer(args)` (without the input and
    output embeddings, and the final norm, when `embeddings` is false)."""
    L, d0, V = args.n_levels, args.dimensions[0], args.vocab_size
    n = sum(2 * args.layers[i] * block_params(args, i) + transition_params(args, i) for i in range(L))
    n += args.layers[L] * block_params(args, L)
    if args.lambda_level > 0:
        n += 2 * d0 + 2 * d0 * (L + 1)
    if embeddings:
        n += 2 * V * d0 + d0
    return n


def mean_context(n: float, window: int) -> float:
    """Mean number of keys a query attends to in causal attention over n positions."""
    if window <= 0 or window >= n:
        return (n + 1) / 2
    return (window * (window + 1) / 2 + (n - window) * window) / n


@dataclass
class Flops:
    """Training FLOPs per input byte, by kind."""

    linear: float
    attention: float

    @property
    def total(self) -> float:
        return self.linear + self.attention


def stage_positions(args: ModelArgs, seq_len: int, fractions: tuple[float, ...] | None = None,
                    padded: bool = False) -> list[float]:
    """Positions processed at each stage for a `seq_len`-byte input."""
    lengths = args.stage_lengths(seq_len)
    if padded:
        return [float(n) for n in lengths]
    fractions = fractions or DEFAULT_STAGE_FRACTIONS
    if len(fractions) < len(lengths):
        raise ValueError(f"need a stage fraction for each of the {len(lengths)} stages, got {len(fractions)}")
    return [min(f * seq_len, n) for f, n in zip(fractions, lengths)]


def flops_at(args: ModelArgs, positions) -> Flops:
    """Forward + backward FLOPs of one sequence that has `positions[i]` positions at stage i
    (totals, not per byte; see the module doc for what counts)."""
    L, dims = args.n_levels, args.dimensions
    transition = pooling_class(args.pooling_type)
    linear = attention = 0.0
    for i in range(L + 1):
        depth = args.layers[i] * (1 if i == L else 2)
        weights = block_params(args, i) - 2 * dims[i]  # norms are not matmuls
        linear += 6 * depth * weights * positions[i]
        attention += 12 * depth * dims[i] * mean_context(positions[i], args.sliding_windows[i]) * positions[i]
    for i in range(L):
        linear += transition.flops(dims[i], dims[i + 1], fine=positions[i], coarse=positions[i + 1])
    linear += 6 * dims[0] * args.vocab_size * positions[0]
    if args.lambda_level > 0:
        linear += 6 * 2 * dims[0] * (L + 1) * positions[0]
    return Flops(linear, attention)


def flops_per_byte(args: ModelArgs, seq_len: int, fractions: tuple[float, ...] | None = None,
                   padded: bool = False) -> Flops:
    """Forward + backward FLOPs per byte of one `seq_len`-byte sequence (see the module doc)."""
    total = flops_at(args, stage_positions(args, seq_len, fractions, padded))
    return Flops(total.linear / seq_len, total.attention / seq_len)


def batch_flops(args: ModelArgs, counts, lengths) -> tuple[float, float]:
    """(useful, executed) training FLOPs of one batch: useful counts each row's real positions
    per stage (`counts` [B, L + 1], from `aunet.model.lengths.stage_counts`), executed counts
    what the model runs, every row at the batch's `lengths` (bucketed, or padded to the caps)."""
    useful = sum(flops_at(args, row).total for row in counts.tolist())
    return useful, len(counts) * flops_at(args, lengths).total
