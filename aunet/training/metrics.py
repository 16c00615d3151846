"""Training metrics summed on the accelerator and read on the host only when they are logged.

A micro-step adds device scalars to one device tensor (no host synchronisation); a logging step
all-reduces that tensor where it lives (NCCL accepts only accelerator tensors) and reads it
back once. The token count is the same for every batch, so it stays a Python integer.
"""

from __future__ import annotations

import torch

FIELDS = ("loss", "nats", "scored_bytes", "text_bytes")


class DeviceMetrics:
    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.sums = torch.zeros(len(FIELDS), dtype=torch.float64, device=self.device)
        self.micro_steps = 0
        self.tokens = 0

    def add(self, loss: torch.Tensor, nats: torch.Tensor, scored: torch.Tensor, target_bytes: torch.Tensor, tokens: int) -> None:
        """One micro-batch: its loss, byte nats and scored bytes (from the model's forward) and
        the text bytes its targets stand for; all device tensors."""
        self.sums += torch.stack([t.to(torch.float64) for t in (loss.detach(), nats, scored, target_bytes.sum())])
        self.micro_steps += 1
        self.tokens += tokens

    def reduced(self, all_reduce=None) -> torch.Tensor:
        """The sums over every rank, as a device tensor (`all_reduce` is
        torch.distributed.all_reduce when several ranks train)."""
        totals = self.sums.clone()
        if all_reduce is not None:
            all_reduce(totals)
        return totals

    def reset(self) -> None:
        self.sums.zero_()
        self.micro_steps = self.tokens = 0
