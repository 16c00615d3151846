"""Tiny model configurations shared by the model tests, and slow reference implementations
that the tests and benchmarks measure the model's code against."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aunet import Segmenter
from aunet.config import BlockArgs, ModelArgs
from aunet.inference.sampling import sample_bytes
from aunet.model import HierarchicalTransformer

POOLING_TYPES = ["simple", "simple_repeat", "simple_indexed_matmul", "simple_non_param"]
POOLING_COMBOS = ["simple_non_param_repeat", "simple_non_param_indexed_matmul", "simple_repeat_indexed_matmul"]
# The default pooling in the fast tier, the other six in the slow one (`make test` runs all seven):
# for the tests whose every case builds and runs a model at each depth.
POOLINGS_DEFAULT_FAST = [p if p == "simple_indexed_matmul" else pytest.param(p, marks=pytest.mark.slow)
                         for p in POOLING_TYPES + POOLING_COMBOS]
STRATEGIES = [{"word1": "1@1"}, {"word1": "1@1", "word2": "2@1"}, {"word1": "1@1", "word2": "2@1", "word4": "4@1"}]

TEXT = (
    "The cat sat on the mat. It looked at the dog, and the dog looked back; nobody moved.\n"
    "def pool(levels, stage):\n    return [p for p, m in enumerate(levels) if m > stage]\n"
)


def tiny_args(levels: int, pooling_type: str = "simple_indexed_matmul", **overrides) -> ModelArgs:
    """A model with `levels` pooling levels, widths doubling per stage (so non_param works),
    small windows (so the banded and masked attention paths both run)."""
    n = levels + 1
    kw = dict(
        dimensions=[16 * 2**i for i in range(n)],
        layers=[1] * n,
        head_dims=[8] * n,
        sliding_windows=[8] * n,
        max_seqlens=[-1] * n,
        pooling_type=pooling_type,
        block=BlockArgs(multiple_of=16, rope_theta=10000.0),
    )
    kw.update(overrides)
    return ModelArgs(**kw)


def text_batch(levels: int, length: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and segmenter levels of `TEXT` windows (BOS first), as [batch, length]."""
    seg = Segmenter(STRATEGIES[levels - 1])
    data = TEXT.encode() * (1 + (length * batch) // len(TEXT))
    toks, levs = [], []
    for b in range(batch):
        doc = data[b * 7: b * 7 + length - 1]
        toks.append([256, *doc])
        levs.append(seg.levels(doc, bos=True).tolist())
    return torch.tensor(toks), torch.tensor(levs)


def export_random_model(directory, cfg, seed: int = 0) -> HierarchicalTransformer:
    """A randomly initialised model of the training config `cfg`, written as `aunet export`
    writes one (model.safetensors + config.yaml)."""
    import yaml
    from safetensors.torch import save_file

    from aunet.config import to_dict

    torch.manual_seed(seed)
    model = HierarchicalTransformer(cfg.model)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(directory / "model.safetensors"))
    (directory / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    return model


def indexed_up_loop(x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Reference semantics of the multi-linear map: y[b, t] = weight[offset[b, t] mod 16] x[b, t],
    one masked matmul per offset, as the reference computes it (data-dependent shapes, one host
    sync per offset). The yardstick of `simple_indexed_matmul`'s batched upsampling."""
    out = x.new_zeros(*x.shape[:-1], weight.shape[1])
    slot = offset % weight.shape[0]
    for o in range(weight.shape[0]):
        b, t = torch.where(slot == o)
        if b.numel():
            out[b, t] = x[b, t] @ weight[o].T
    return out


def indexed_up_all_maps(x: torch.Tensor, weight: torch.Tensor, up_k: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The previous batched multi-linear map: all 16 maps applied to every coarse vector x
    [B, K, d_in] in one matmul, then each position gathers its (k, o mod 16) row. 16 K rows of
    work where T are needed; the yardstick of the prefix-bounded version."""
    y = torch.einsum("...d,oed->...oe", x, weight.to(x.dtype))
    slot = up_k * weight.shape[0] + offset % weight.shape[0]
    return y.flatten(1, 2).gather(1, slot[..., None].expand(-1, -1, y.shape[-1]))


def sample_byte(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, seed: int, n: int) -> int:
    """Byte `n` of a row seeded `seed` from logits [vocab] (only ids < 256 are candidates):
    `sample_bytes` for one row."""
    one = torch.ones(1, dtype=torch.long, device=logits.device)
    return int(sample_bytes(logits[None], temperature, top_k, top_p, one * seed, one * n)[0])


def packed_levels(docs: list[bytes], strategy: dict, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and levels of `batch` packed windows of BOS + document + EOS, as the loader packs
    them (documents repeat when the corpus is shorter than the batch)."""
    seg = Segmenter(strategy)
    toks = [np.concatenate([[256], np.frombuffer(d, np.uint8), [257]]) for d in docs]
    levs = [seg.levels(d, bos=True, eos=True) for d in docs]
    tok, lev = np.concatenate(toks), np.concatenate(levs)
    reps = -(-batch * seq_len // len(tok))
    tok, lev = np.tile(tok, reps), np.tile(lev, reps)
    return tok[: batch * seq_len].reshape(batch, seq_len).astype(np.int64), lev[: batch * seq_len].reshape(batch, seq_len)
