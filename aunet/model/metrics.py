"""Bits per byte (SPEC section 4): comparable across byte-level and BPE models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def byte_nats(logits: torch.Tensor, targets: torch.Tensor,
              target_bytes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats, fp32) over the targets that stand for text, and the bytes of
    text they stand for. Without `target_bytes` the ids are bytes: targets 0 <= id < 256 count
    one byte each. With it (the loader's batch["target_bytes"], e.g. for BPE tokens) a target
    counts when it stands for at least one byte. BOS/EOS targets and ignored positions (-100)
    count for neither; sum both over batches (and ranks) before dividing."""
    if target_bytes is None:
        counts = ((targets >= 0) & (targets < 256)).flatten().long()
    else:
        counts = torch.where(targets >= 0, target_bytes, 0).flatten().long()
    nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten().clamp(min=0), reduction="none")
    return (nll * (counts > 0)).sum(), counts.sum()


def bpb(logits: torch.Tensor, targets: torch.Tensor, target_bytes: torch.Tensor | None = None) -> torch.Tensor:
    """Bits per byte of one batch: byte_nats / count / ln 2."""
    nats, count = byte_nats(logits, targets, target_bytes)
    return nats / count.clamp(min=1) / math.log(2)
