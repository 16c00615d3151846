"""The reference sampler for tests and benchmarks: one byte at a time, re-running the whole
prefix through the full forward pass each step (O(n^2), no cache).

The cached generator (`aunet.inference.generate`) must produce what this produces; both draw
each byte with `sample_byte`, so only the way logits are computed differs. Levels of the prefix
are either its full-document mask (`levels="full"`, re-segmented every byte, as training sees a
document) or the causal levels of `Segmenter.stream()` (`levels="causal"`, what the cached
generator feeds). BOS is at full depth.
"""

from __future__ import annotations

import torch

from aunet.config import BOS_ID
from aunet.inference.generate import sample_byte
from aunet.segment import Segmenter


@torch.no_grad()
def uncached_generate(model, strategy, prompt: bytes, max_bytes: int, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, seed: int = 0, levels: str = "full") -> bytes:
    seg = Segmenter(strategy) if strategy else None
    stream = seg.stream() if seg is not None and levels == "causal" else None
    causal = [int(v) for v in stream.push(prompt)] if stream is not None else []
    rng = torch.Generator().manual_seed(seed)
    out = bytearray()
    limit = model.args.max_seqlens[0]
    for _ in range(max_bytes):
        data = bytes(prompt) + bytes(out)
        if seg is None:
            lv = [0] * (len(data) + 1)
        elif stream is None:
            lv = seg.levels(data, bos=True).tolist()
        else:
            lv = [seg.depth] + causal
        if limit != -1 and len(data) + 1 > limit:
            data, lv = data[-(limit - 1):], [lv[0]] + lv[-(limit - 1):]
        logits, _ = model(torch.tensor([[BOS_ID, *data]]), torch.tensor([lv]) if seg is not None else None)
        b = sample_byte(logits[0, -1], temperature, top_k, top_p, rng)
        out.append(b)
        if stream is not None:
            causal.append(int(stream.push(bytes([b]))[0]))
    return bytes(out)
