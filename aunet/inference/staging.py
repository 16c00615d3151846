"""Host arrays to the device without a blocking copy, and without racing the copy before.

On CUDA a non-blocking copy from pinned memory returns before the copy has run; rewriting
that pinned buffer for the next step could change what the previous copy reads. Buffers are
therefore used in turn, and one is rewritten only after the event recorded behind its last
copy has passed (by then the GPU has long finished it, so the wait costs nothing in
practice). Elsewhere a plain copy is already synchronous.
"""

from __future__ import annotations

import numpy as np
import torch


class Staging:
    def __init__(self, device: torch.device, buffers: int = 2):
        self.device = device
        self.cuda = device.type == "cuda"
        self.pinned: list[torch.Tensor | None] = [None] * buffers
        self.events: list[torch.cuda.Event | None] = [None] * buffers
        self.turn = 0

    def upload(self, host: np.ndarray) -> torch.Tensor:
        """An int64 array [n] as a device tensor."""
        src = torch.from_numpy(np.ascontiguousarray(host, dtype=np.int64))
        if not self.cuda:
            return src.to(self.device)
        k = self.turn
        self.turn = (k + 1) % len(self.pinned)
        if self.events[k] is not None:
            self.events[k].synchronize()
        buf = self.pinned[k]
        if buf is None or buf.numel() < src.numel():
            buf = self.pinned[k] = torch.empty(max(src.numel(), 256), dtype=torch.long).pin_memory()
        buf[: src.numel()].copy_(src)
        out = buf[: src.numel()].to(self.device, non_blocking=True)
        event = self.events[k] = torch.cuda.Event()
        event.record()
        return out
