"""The barrier ranks wait at while raw-text sources are segmented at launch.

Segmenting a raw corpus can take hours, and ranks finish their shares at different times. The
training process group is NCCL on GPUs, whose watchdog aborts a collective that has not finished
within the group's timeout (30 minutes under DeepSpeed); a rank waiting that long at a barrier
would bring the run down. So the ranks wait on a gloo group of their own (host-side, nothing on
the accelerator) created with `distributed.segment_timeout_minutes`.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist


class SegmentBarrier:
    """A barrier on a dedicated gloo group. Every rank constructs one before segmenting (the
    group's creation is itself a rendezvous of every rank, which must not wait behind a long
    segmentation) and releases it afterwards (gloo keeps a connection to every other rank
    open while the group lives); `calls` counts the barriers passed."""

    def __init__(self, minutes: float):
        self.group = dist.new_group(backend="gloo", timeout=timedelta(minutes=minutes))
        self.calls = 0

    def __call__(self) -> None:
        dist.barrier(group=self.group)
        self.calls += 1

    def release(self) -> dict:
        """Destroy the group; returns what it was, read back from torch before (its backend,
        its timeout, whether it is the default group) and the barriers passed on it."""
        backend = self.group._get_backend(torch.device("cpu"))
        seen = {"backend": dist.get_backend(self.group), "timeout_s": backend.options._timeout.total_seconds(),
                "is_default_group": self.group is dist.group.WORLD, "calls": self.calls}
        dist.destroy_process_group(self.group)
        return seen
