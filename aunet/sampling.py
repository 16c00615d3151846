"""Plain sampling from a model, one byte at a time, re-running the whole prefix each step.

Correct but O(n^2): the cached hierarchical generator is a separate piece of work. Levels of
the prefix come from the segmenter, as in training (BOS at full depth).
"""

from __future__ import annotations

import torch

from aunet.segmenter import Segmenter

BOS, EOS = 256, 257


@torch.no_grad()
def sample(model, strategy, prompt: bytes, max_bytes: int, temperature: float = 0.8, top_k: int = 0, seed: int = 0) -> bytes:
    seg = Segmenter(strategy) if strategy else None
    gen = torch.Generator().manual_seed(seed)
    out = bytearray()
    limit = model.args.max_seqlens[0]
    for _ in range(max_bytes):
        data = bytes(prompt) + bytes(out)
        if limit != -1 and len(data) + 1 > limit:
            data = data[-(limit - 1):]
        tokens = torch.tensor([[BOS, *data]], dtype=torch.long)
        levels = torch.from_numpy(seg.levels(data, bos=True).astype("int64"))[None] if seg else None
        logits, _ = model(tokens, levels)
        logits = logits[0, -1, :256].float()  # bytes only: BOS/EOS never sampled mid-text
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k > 0:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        out.append(nxt)
    return bytes(out)
