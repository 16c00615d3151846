"""Bits per byte (SPEC section 4): comparable across byte-level and BPE models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def byte_nats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (nats, fp32) over the targets that are bytes (0 <= id < 256), and
    their count. BOS/EOS targets and ignored positions (-100) count for neither; sum both over
    batches (and ranks) before dividing."""
    is_byte = (targets >= 0) & (targets < 256)
    nll = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten().clamp(min=0), reduction="none")
    mask = is_byte.flatten()
    return (nll * mask).sum(), mask.sum()


def bpb(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Bits per byte of one batch: byte_nats / count / ln 2."""
    nats, count = byte_nats(logits, targets)
    return nats / count.clamp(min=1) / math.log(2)
