"""Compilation one transformer block at a time.

The unit of compilation is the `Block` (attention + SwiGLU with their norms): every stack is a
list of them, so one compiled function serves every block of a stage, and a block holds no
collective, hook or host read, so it compiles into one graph (`fullgraph=True` makes a graph
break an error rather than a silent slowdown). Under ZeRO-3 the trainer also declares blocks
DeepSpeed leaf modules, so that their parameters are gathered once before the block runs
instead of by a hook inside every Linear, which is what broke whole-model graphs at every layer.

Shapes are static (`dynamic=False`): every sequence length comes from the stage buckets
(`aunet.model.lengths`), so a block compiles once per bucket it meets, and `compile_shapes`
bounds how many that can be.
"""

from __future__ import annotations

import torch
from torch import nn

from aunet.config.model import ModelArgs
from aunet.config.train import COMPILE_BACKENDS
from aunet.model.layers import Block
from aunet.model.lengths import round_up


def compile_blocks(model: nn.Module, backend: str = "inductor") -> int:
    """Replace the forward of every `Block` of `model` by its compiled version (the module's
    hooks stay outside the compiled code). Returns the number of blocks."""
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile backend {backend!r} is not one of {', '.join(COMPILE_BACKENDS)}")
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.forward = torch.compile(block.forward, backend=backend, dynamic=False, fullgraph=True)
    return len(blocks)


def compile_shapes(args: ModelArgs, seq_len: int) -> int:
    """Most distinct sequence lengths the blocks can meet in training at `seq_len`: the byte
    length, then per deeper stage every multiple of `stage_bucket` below its cap and the cap."""
    caps = args.stage_lengths(seq_len)
    if args.stage_bucket == 0:
        return len(set(caps))
    return 1 + sum(round_up(cap, args.stage_bucket) // args.stage_bucket for cap in caps[1:])
