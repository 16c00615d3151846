"""How many positions each stage of the U-Net runs for one batch, decided on the host.

The reference pads every stage to `max_seqlens` (3,200 slots of the "1B" AU-Net-2 at seq_len
8192, where real text pools into about half of them), so its trunk does about twice the work a
batch needs. The levels of a batch are on the host before it is copied (the loader, the
evaluation batcher, a prompt), so the pooled count of every row at every stage can be computed
there, for free, and the model told how many slots to run: the largest count of the batch,
rounded up to a bucket (a multiple of `ModelArgs.stage_bucket`, 128 by default) so that the set
of shapes, and hence of compiled kernels, stays small. `max_seqlens` stays the cap, and its
truncation rule (stage i+1 keeps the first `max_seqlens[i+1]` pooled positions) is unchanged;
every real position is computed exactly as in the padded pass, and the padding slots that are
left out never reach a real position (attention is causal and padding comes last).
"""

from __future__ import annotations

import numpy as np
import torch

from aunet.config.model import ModelArgs
from aunet.model.flops import batch_flops


def round_up(n: int, bucket: int) -> int:
    """`n` rounded up to a multiple of `bucket` (> 0)."""
    return -(-n // bucket) * bucket


def _host_levels(levels) -> np.ndarray:
    if isinstance(levels, torch.Tensor):
        if levels.device.type != "cpu":
            raise ValueError(f"stage lengths are computed on the host: levels are on {levels.device} "
                             "(compute them before the copy to the accelerator)")
        levels = levels.numpy()
    levels = np.asarray(levels)
    if levels.ndim != 2:
        raise ValueError(f"levels must be [batch, time], got shape {levels.shape}")
    return levels


def stage_counts(levels, args: ModelArgs) -> np.ndarray:
    """Real (not padding) positions of every row at every stage, [B, L + 1] int64, for levels
    [B, T] (numpy or a CPU tensor) as the model pools them: levels above L count as L, position 0
    opens a segment at every stage, stage i+1 keeps the first `max_seqlens[i+1]` of them."""
    lev = _host_levels(levels)
    B, T = lev.shape
    L = args.n_levels
    caps = args.stage_lengths(T)
    counts = np.empty((B, L + 1), dtype=np.int64)
    counts[:, 0] = T
    if L == 0:
        return counts
    present = np.ones((B, T), dtype=bool)  # position j is one of the stage's kept positions
    for i in range(L):
        keep = present & (lev > i)
        keep[:, 0] = True
        keep &= np.cumsum(keep, axis=1) <= caps[i + 1]
        counts[:, i + 1] = keep.sum(axis=1)
        present = keep
    return counts


def lengths_from_counts(counts: np.ndarray, args: ModelArgs, seq_len: int, bucket: int | None = None) -> list[int]:
    """The stage lengths of a batch whose rows have these `stage_counts`: each stage's largest
    count rounded up to a multiple of `bucket` (default `args.stage_bucket`; 0 pads every stage
    to its `max_seqlens` cap, the reference's shapes), never above the cap."""
    bucket = args.stage_bucket if bucket is None else bucket
    if bucket < 0:
        raise ValueError(f"bucket must be >= 0, got {bucket}")
    caps = args.stage_lengths(seq_len)
    if bucket == 0:
        return caps
    lengths = [seq_len]
    for i in range(1, len(caps)):
        need = int(counts[:, i].max()) if len(counts) else 1
        lengths.append(max(1, min(round_up(need, bucket), caps[i])))
    return lengths


def stage_lengths(levels, args: ModelArgs, bucket: int | None = None) -> list[int]:
    """Sequence length of every stage for a batch of `levels` [B, T] (numpy or a CPU tensor):
    the byte length T, then each deeper stage's largest pooled count rounded up to a multiple of
    `bucket` (default `args.stage_bucket`, 128 unless configured) and capped by `max_seqlens`.
    Hand the result to `HierarchicalTransformer.forward(..., stage_lengths=)`; logits equal
    those of the padded pass.

    >>> args = ModelArgs(dimensions=[32, 64], layers=[1, 1], head_dims=[16, 16], max_seqlens=[-1, 300])
    >>> levels = np.zeros((2, 1000), dtype=np.uint8); levels[0, ::4] = 1
    >>> stage_lengths(levels, args)
    [1000, 256]
    >>> stage_lengths(levels, args, bucket=0)
    [1000, 300]
    """
    lev = _host_levels(levels)
    return lengths_from_counts(stage_counts(lev, args), args, lev.shape[1], bucket)


def check_stage_lengths(lengths, args: ModelArgs, seq_len: int) -> list[int]:
    """`lengths` as plain ints after checking them against the model: one per stage, the byte
    length first, each deeper one between 1 and its `max_seqlens` cap."""
    caps = args.stage_lengths(seq_len)
    lengths = [int(n) for n in lengths]
    if len(lengths) != len(caps) or lengths[0] != seq_len or not all(1 <= n <= c for n, c in zip(lengths[1:], caps[1:])):
        raise ValueError(f"stage_lengths {lengths} do not fit an input of {seq_len} positions: expected "
                         f"{len(caps)} lengths, the first {seq_len}, each deeper one in [1, {caps[1:]}] (its cap)")
    return lengths


def bucketed_length(n: int, args: ModelArgs, bucket: int | None = None) -> int:
    """The byte length to pad an input of `n` positions to (prompts, scored windows): `n` rounded
    up to a multiple of `bucket` (default `args.stage_bucket`; 0 keeps `n`), never past
    `max_seqlens[0]`, so that inputs of any length run in a bounded set of shapes."""
    bucket = args.stage_bucket if bucket is None else bucket
    if bucket <= 0 or n <= 0:
        return n
    limit = args.max_seqlens[0]
    padded = round_up(n, bucket)
    return max(n, padded if limit == -1 else min(padded, limit))


def batch_stage_fields(levels: np.ndarray, args: ModelArgs) -> dict:
    """What a batch carries about its stages, for inputs with `levels` [B, T] on the host:
    `stage_counts` (each row's real positions per stage), `stage_lengths` (what the model runs,
    bucketed) and `flops` ((useful, executed) training FLOPs, `aunet.model.flops.batch_flops`).
    The loader computes them on its prefetch thread, so the training step only adds two floats."""
    counts = stage_counts(levels, args)
    lengths = lengths_from_counts(counts, args, levels.shape[1])
    return {"stage_counts": counts, "stage_lengths": lengths, "flops": batch_flops(args, counts, lengths)}
