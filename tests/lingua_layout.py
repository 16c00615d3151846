"""The reference's (lingua apps/aunet) parameter layout, written from its description rather than
from aunet.model.convert, so that tests check the converter against an independent inverse.

The reference's blocks hold `attention.wq` [n_heads * head_dim, dim], `attention.wk` and
`attention.wv` [n_kv_heads * head_dim, dim], `feed_forward.w1` and `w3` [hidden, dim] (w1 is the
gate: w2(silu(w1 x) * w3 x)); everything else has our names. Its non-parametric transitions
carry two persistent buffers, `features_weight` and `expand_idx`.
"""

from __future__ import annotations

import torch

from aunet.config import ModelArgs


def stage_of(name: str, args: ModelArgs) -> int:
    parts = name.split(".")
    return args.n_levels if parts[0] == "trunk" else int(parts[1])


def to_lingua(ours: dict[str, torch.Tensor], args: ModelArgs, buffers: bool = True) -> dict[str, torch.Tensor]:
    """Our fused tensors (weights or gradients) -> the reference's names and shapes."""
    out: dict[str, torch.Tensor] = {}
    for name, t in ours.items():
        if name.endswith("attention.wqkv.weight"):
            i = stage_of(name, args)
            q = args.dimensions[i]  # n_heads * head_dim: the stage width
            kv = args.n_kv_heads(i) * args.head_dims[i]
            base = name[: -len("wqkv.weight")]
            out[base + "wq.weight"], out[base + "wk.weight"], out[base + "wv.weight"] = t[:q], t[q:q + kv], t[q + kv:]
            assert t.shape[0] == q + 2 * kv
        elif name.endswith("feed_forward.w13.weight"):
            hidden = args.block.ffn_hidden(args.dimensions[stage_of(name, args)])
            base = name[: -len("w13.weight")]
            out[base + "w1.weight"], out[base + "w3.weight"] = t[:hidden], t[hidden:]
            assert t.shape[0] == 2 * hidden
        else:
            out[name] = t
    if buffers and "non_param" in args.pooling_type:
        for i in range(args.n_levels):
            d_in, d_out = args.dimensions[i], args.dimensions[i + 1]
            r = d_out // d_in
            out[f"transitions.{i}.features_weight"] = (torch.arange(1, r + 1) / r).repeat(d_in)
            out[f"transitions.{i}.expand_idx"] = torch.arange(d_in).repeat_interleave(r)
    return out
