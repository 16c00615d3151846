"""Bits per byte (SPEC section 4): comparable across byte-level and BPE models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def text_bytes(targets: torch.Tensor, target_bytes: torch.Tensor | None = None) -> torch.Tensor:
    """Bytes of text each target stands for, flattened (long). Without `target_bytes` the ids
    are bytes: 0 <= id < 256 count one each. With it (the loader's batch["target_bytes"], e.g.
    for BPE tokens) a target counts what it stands for. BOS/EOS and ignored (-100) count 0."""
    if target_bytes is None:
        return ((targets >= 0) & (targets < 256)).flatten().long()
    return torch.where(targets >= 0, target_bytes, 0).flatten().long()


def nats_over_text(nll: torch.Tensor, targets: torch.Tensor,
                   target_bytes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed nats, bytes of text) from per-target cross-entropies `nll` (flattened): the
    targets that stand for text count, the others do not. No host synchronisation."""
    counts = text_bytes(targets, target_bytes)
    return (nll * (counts > 0)).sum(), counts.sum()


def byte_nats(logits: torch.Tensor, targets: torch.Tensor,
              target_bytes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats, fp32) over the targets that stand for text, and the bytes of
    text they stand for (`text_bytes`); sum both over batches (and ranks) before dividing."""
    nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten().clamp(min=0), reduction="none")
    return nats_over_text(nll, targets, target_bytes)


def bpb(logits: torch.Tensor, targets: torch.Tensor, target_bytes: torch.Tensor | None = None) -> torch.Tensor:
    """Bits per byte of one batch: byte_nats / count / ln 2."""
    nats, count = byte_nats(logits, targets, target_bytes)
    return nats / count.clamp(min=1) / math.log(2)
