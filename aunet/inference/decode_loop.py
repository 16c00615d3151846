"""The device side of one `Generator.generate` call: what was sampled, and which rows are done.

Everything a sampling step updates lives in device tensors of fixed shapes (the bytes and
levels of every row, the number emitted, the last bytes for the stop strings, the done
flags), so the host reads them only when it wants them: once per chunk of bytes. A row is
done once it has `max_bytes` bytes, its output ends with a stop string (checked on the device
over a window of its last bytes), or its sequence is full (`max_seqlens[0]`); the byte that
ends it is kept, and is not fed back to the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aunet.inference.sampling import sample_bytes


class DecodeLoop:
    def __init__(self, batch: int, max_bytes: int, device: torch.device, temperature: float, top_k: int,
                 top_p: float, stops: Sequence[bytes], seed: int, limit: int):
        self.max_bytes, self.limit = max_bytes, limit
        self.sampling = (temperature, top_k, top_p)
        self.rows = torch.arange(batch, device=device)
        self.bytes = torch.zeros(batch, max_bytes, dtype=torch.long, device=device)
        self.levels = torch.zeros(batch, max_bytes, dtype=torch.long, device=device)
        """The level each emitted byte was fed to the model with (0 for one never fed)."""
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.seeds = torch.full((batch,), seed, dtype=torch.long, device=device)
        width = max(map(len, stops), default=0)
        self.window = torch.full((batch, width), -1, dtype=torch.long, device=device)
        # Stop strings right-aligned in [n, width]; `free` marks the columns left of a shorter one.
        table = torch.full((len(stops), width), -1, dtype=torch.long)
        for n, s in enumerate(stops):
            table[n, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
        self.stops = table.to(device)
        self.free = self.stops < 0

    def sample(self, logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Draw the next byte of every row that is not done (from `logits` [B, vocab]), record
        it, and mark the rows it ends; `lengths` [B] are the rows' sequence lengths (stage 0).
        Returns the bytes [B] (device)."""
        live = ~self.done
        byte = sample_bytes(logits, *self.sampling, self.seeds, self.count)
        col = self.count.clamp(max=self.max_bytes - 1)
        self.bytes[self.rows, col] = torch.where(live, byte, self.bytes[self.rows, col])
        self.count += live
        ended = self.count >= self.max_bytes
        if self.limit != -1:
            ended = ended | (lengths >= self.limit)
        if self.window.shape[1]:
            shifted = torch.cat([self.window[:, 1:], byte[:, None]], 1)
            self.window.copy_(torch.where(live[:, None], shifted, self.window))
            hit = ((self.window[:, None, :] == self.stops[None]) | self.free[None]).all(-1).any(-1)
            ended = ended | hit
        self.done |= live & ended
        return byte

    def record_levels(self, levels: torch.Tensor, fed: torch.Tensor) -> None:
        """The levels [B] the rows `fed` [B] ran their last emitted byte with."""
        col = (self.count - 1).clamp(min=0)
        self.levels[self.rows, col] = torch.where(fed, levels, self.levels[self.rows, col])

    def read(self, start: int, stop: int) -> tuple[list[int], list[bool], list[list[int]], list[list[int]]]:
        """One host read: per row its count and done flag, and its bytes and levels in columns
        [start, stop)."""
        packed = torch.cat([self.count[:, None], self.done[:, None].long(), self.bytes[:, start:stop],
                            self.levels[:, start:stop]], 1).cpu()
        width = stop - start
        rows = packed.tolist()
        return ([r[0] for r in rows], [bool(r[1]) for r in rows], [r[2:2 + width] for r in rows],
                [r[2 + width:] for r in rows])
