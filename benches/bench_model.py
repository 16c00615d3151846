"""Model speed on the CPU: AU-Net against a flat byte transformer of the same FLOPs per byte, and
multi-linear upsampling against the reference's per-offset loop.

1. Forward + backward time of the tiny AU-Net-2 and AU-Net-3 (configs/tiny_aunet*.yaml, their
   batch and sequence length) on Python standard library text with real segmenter levels,
   against flat byte-level transformers (same blocks, full causal attention) sized to the same
   training FLOPs per byte. Two flat peers each: matched to the FLOPs the AU-Net executes
   (stages padded to max_seqlens, the reference's accounting) and to its useful FLOPs (the
   pooled share of positions measured on this text). `x flat` = AU-Net time / flat time.
2. Per-batch stage lengths against padding every stage to max_seqlens (the reference), for
   the "1B" AU-Net-2 and AU-Net-3 at seq_len 8192 on real English prose: FLOPs per byte at
   the real widths, and CPU time of the same proportions scaled down, as ratios.
3. The upsampling of one transition, forward + backward: our batched multi-linear map (each
   offset map on the prefix of coarse vectors that can use it) against the reference's loop
   over the 16 offsets (torch.where, one host sync each) and against our previous version (all
   16 maps on every coarse vector), at the tiny size and at the paper's AU-Net-2 size
   (512 <-> 2048, 2048 bytes).
4. Fused projections (one Q/K/V matmul, one W1/W3 matmul per block) against the same weights
   run as the reference's separate projections: ATen ops and matmuls per forward pass (what a
   GPU launches as kernels, eagerly), and CPU forward + backward time, as ratios.

Timings use one thread by default: on a shared 2-core machine, OpenMP threads that wait on each
other turn any other load into 10-50x stalls, while one thread degrades gracefully.

    .venv/bin/python benches/bench_model.py [--repeats 5] [--threads 1] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import save  # noqa: E402
from corpora import english_prose, stdlib_docs  # noqa: E402

from aunet import Segmenter  # noqa: E402
from aunet.config import ModelArgs, load_config  # noqa: E402
from aunet.model.flops import batch_flops, flops_per_byte, param_count  # noqa: E402
from aunet.model import HierarchicalTransformer, stage_lengths  # noqa: E402
from aunet.model.layers import Attention, FeedForward, apply_rope, causal_attention  # noqa: E402
from aunet.model.lengths import stage_counts  # noqa: E402
from aunet.model.pooling import build_transition, gather_rows, pool_index  # noqa: E402
from model_helpers import indexed_up_all_maps, indexed_up_loop  # noqa: E402

CONFIGS = HERE.parent / "configs"


def best_times(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function, timed in interleaved rounds, so that a stall of this
    shared machine cannot land on one of them only."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def text_batch(strategy: dict[str, str], batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed windows of BOS + document + EOS with segmenter levels (BOS gets the full depth)."""
    seg = Segmenter(strategy)
    toks, levs = [], []
    for doc in stdlib_docs(batch * seq_len * 2):
        toks.append(np.concatenate([[256], np.frombuffer(doc, np.uint8), [257]]))
        levs.append(seg.levels(doc, bos=True, eos=True))
    t = np.concatenate(toks)[: batch * seq_len].reshape(batch, seq_len)
    m = np.concatenate(levs)[: batch * seq_len].reshape(batch, seq_len)
    return torch.from_numpy(t.astype(np.int64)), torch.from_numpy(m.astype(np.int64))


def stage_fractions(levels: torch.Tensor, n_levels: int) -> tuple[float, ...]:
    return tuple(float((levels > i - 1).float().mean()) if i else 1.0 for i in range(n_levels + 1))


def flat_peer(target: float, like: ModelArgs, seq_len: int) -> ModelArgs:
    """The flat transformer closest to `target` FLOPs/byte, with a width between the AU-Net's
    narrowest and widest stage (a multiple of 16, so matmul shapes are comparable) and 1-24 layers."""
    best = None
    for dim in range(like.dimensions[0], like.dimensions[-1] + 1, 16):
        for layers in range(1, 25):
            args = ModelArgs(dimensions=[dim], layers=[layers], head_dims=[16], sliding_windows=[-1],
                             max_seqlens=[-1], residuals=[], block=like.block, pooling_type=like.pooling_type)
            err = abs(math.log(flops_per_byte(args, seq_len).total / target))
            if best is None or err < best[0]:
                best = (err, args)
    return best[1]


def train_step(args: ModelArgs, tokens: torch.Tensor, levels: torch.Tensor):
    """A forward + backward pass of a fresh model, as a closure."""
    torch.manual_seed(0)
    model = HierarchicalTransformer(args)
    inputs, lv, targets = tokens[:, :-1], levels[:, :-1], tokens[:, 1:]

    def step():
        model.zero_grad(set_to_none=True)
        _, loss = model(inputs, lv, targets)
        loss.backward()

    return step


def tiny_batches():
    """(config name, model args, seq_len, batch size, tokens, levels) of each tiny config."""
    for name in ("tiny_aunet2", "tiny_aunet3"):
        cfg, _ = load_config(CONFIGS / f"{name}.yaml")
        T, B = cfg.data.seq_len, cfg.data.batch_size
        tokens, levels = text_batch(cfg.data.regex.strategy, B, T + 1)
        yield name, cfg.model, T, B, tokens, levels


def model_rows(repeats: int) -> list[dict]:
    rows = []
    for name, m, T, B, tokens, levels in tiny_batches():
        fractions = stage_fractions(levels, m.n_levels)
        targets = {"executed": flops_per_byte(m, T, padded=True).total,
                   "useful": flops_per_byte(m, T, fractions=fractions).total}
        flats = {kind: flat_peer(target, m, T) for kind, target in targets.items()}
        t_aunet, *t_flats = best_times([train_step(a, tokens, levels) for a in (m, *flats.values())], repeats)
        row = {"model": name, "params": param_count(m), "batch": B, "seq_len": T,
               "stage_fractions": fractions, "stage_lengths": m.stage_lengths(T),
               "flops_per_byte_executed": targets["executed"], "flops_per_byte_useful": targets["useful"],
               "seconds": t_aunet, "bytes_per_s": B * T / t_aunet}
        for (kind, flat), t_flat in zip(flats.items(), t_flats):
            f_flat = flops_per_byte(flat, T).total
            row[f"flat_{kind}"] = {
                "dimensions": flat.dimensions, "layers": flat.layers, "params": param_count(flat),
                "flops_per_byte": f_flat, "flops_ratio": targets[kind] / f_flat, "seconds": t_flat,
                "aunet_time_ratio": t_aunet / t_flat,
            }
        rows.append(row)
    return rows


def upsample_rows(repeats: int) -> list[dict]:
    rows = []
    seg_levels = text_batch({"word1": "1@1"}, 8, 2048)[1]
    for label, d_in, d_out, B, T, K in (("tiny (64->96)", 64, 96, 8, 512, 192),
                                        ("AU-Net-2 (512->2048)", 512, 2048, 1, 2048, 800)):
        torch.manual_seed(0)
        tr = build_transition("simple_indexed_matmul", d_in, d_out, eps=1e-5)
        index = pool_index(seg_levels[:B, :T], 0, K)
        z = torch.randn(B, K, d_out, requires_grad=True)

        def batched():
            tr.zero_grad(set_to_none=True)
            tr.up(z, index).sum().backward()

        def loop():
            tr.zero_grad(set_to_none=True)
            n = gather_rows(tr.up_norm(z), index.up_k)
            (tr.trans_up(n) + indexed_up_loop(n, tr.indexed_linear.weight, index.offset)).sum().backward()

        def all_maps():  # the previous batched version: all 16 maps on every coarse vector
            tr.zero_grad(set_to_none=True)
            n = tr.up_norm(z)
            (gather_rows(tr.trans_up(n), index.up_k)
             + indexed_up_all_maps(n, tr.indexed_linear.weight, index.up_k, index.offset)).sum().backward()

        t_batched, t_loop, t_all = best_times([batched, loop, all_maps], repeats)
        rows.append({"size": label, "batch": B, "seq_len": T, "pooled": K, "batched_s": t_batched,
                     "loop_s": t_loop, "loop_over_batched": t_loop / t_batched,
                     "all_maps_s": t_all, "all_maps_over_batched": t_all / t_batched})
    return rows


def bucket_rows(repeats: int) -> list[dict]:
    """Per-batch stage lengths against padding to max_seqlens, for the "1B" AU-Net-2 and AU-Net-3
    on real English prose at seq_len 8192: FLOPs per byte at the real widths (counted from the
    shapes: useful = each row's real positions, executed = what the model runs), and CPU time of
    a forward + backward pass of the same proportions with widths / 8 and depths / 4."""
    rows = []
    for name in ("aunet2_1b", "aunet3_1b"):
        cfg, _ = load_config(CONFIGS / f"{name}.yaml")
        m, T = cfg.model, cfg.data.seq_len
        B = cfg.data.batch_size
        tok, lev = prose_batch(cfg.data.regex.strategy, B, T + 1)
        counts = stage_counts(lev[:, :-1], m)
        bucketed = stage_lengths(lev[:, :-1], m)
        useful, executed = batch_flops(m, counts, bucketed)
        _, padded = batch_flops(m, counts, m.stage_lengths(T))
        small = dataclasses.replace(m, dimensions=[d // 8 for d in m.dimensions], head_dims=[16] * len(m.dimensions),
                                    layers=[max(1, n // 4) for n in m.layers], block=dataclasses.replace(m.block, multiple_of=16))
        torch.manual_seed(0)
        model = HierarchicalTransformer(small)
        t2, l2 = torch.from_numpy(tok[:2]), torch.from_numpy(lev[:2].astype(np.int64))
        lengths2 = stage_lengths(lev[:2, :-1], small)

        def step(lengths):
            def run():
                model.zero_grad(set_to_none=True)
                model(t2[:, :-1], l2[:, :-1], t2[:, 1:], stage_lengths=lengths)[1].backward()
            return run

        t_padded, t_bucketed = best_times([step(None), step(lengths2)], repeats)
        per_byte = B * T
        rows.append({"model": name, "batch": B, "seq_len": T, "stage_caps": m.stage_lengths(T), "stage_lengths": bucketed,
                     "largest_counts": counts.max(axis=0).tolist(), "useful_flops_per_byte": useful / per_byte,
                     "executed_flops_per_byte": executed / per_byte, "padded_flops_per_byte": padded / per_byte,
                     "padded_over_bucketed_flops": padded / executed, "executed_over_useful": executed / useful,
                     "small_model": {"dimensions": small.dimensions, "layers": small.layers, "batch": 2,
                                     "stage_lengths": lengths2},
                     "padded_s": t_padded, "bucketed_s": t_bucketed, "padded_over_bucketed_time": t_padded / t_bucketed})
    return rows


def prose_batch(strategy: dict[str, str], batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed windows of real English prose (BOS + document + EOS) with segmenter levels."""
    seg = Segmenter(strategy)
    docs = english_prose()
    toks = np.concatenate([np.concatenate([[256], np.frombuffer(d, np.uint8), [257]]) for d in docs])
    levs = np.concatenate([seg.levels(d, bos=True, eos=True) for d in docs])
    n = batch * seq_len
    return toks[:n].reshape(batch, seq_len).astype(np.int64), levs[:n].reshape(batch, seq_len)


class OpCounter(TorchDispatchMode):
    """ATen ops run while active (each one kernel launch, eagerly, on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = self.matmuls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.matmuls += func.overloadpacket.__name__ in ("mm", "addmm", "bmm")
        return func(*args, **(kwargs or {}))


def _split_attention(self, x, rope, window, cache=None, step=None):
    """The training path of `Attention.forward` with one matmul per reference projection."""
    B, T, _ = x.shape
    wq, wk, wv = self.wqkv.weight.split(self.split)
    q = apply_rope(F.linear(x, wq).view(B, T, self.n_heads, self.head_dim), *rope).transpose(1, 2)
    k = apply_rope(F.linear(x, wk).view(B, T, self.n_kv_heads, self.head_dim), *rope).transpose(1, 2)
    v = F.linear(x, wv).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
    return self.wo(causal_attention(q, k, v, window).transpose(1, 2).reshape(B, T, -1))


def _split_feed_forward(self, x):
    w1, w3 = self.w13.weight.chunk(2)
    return self.w2(F.silu(F.linear(x, w1)) * F.linear(x, w3))


@contextlib.contextmanager
def split_projections():
    """Blocks run as before the fusion: the same weights, five input projections per block."""
    saved = Attention.forward, FeedForward.forward
    Attention.forward, FeedForward.forward = _split_attention, _split_feed_forward
    try:
        yield
    finally:
        Attention.forward, FeedForward.forward = saved


def fused_rows(repeats: int) -> list[dict]:
    rows = []
    for name, m, T, B, tokens, levels in tiny_batches():
        torch.manual_seed(0)
        model = HierarchicalTransformer(m)
        counts = {}
        for kind, ctx in (("fused", contextlib.nullcontext), ("split", split_projections)):
            with ctx(), torch.no_grad(), OpCounter() as c:
                logits = model(tokens[:, :-1], levels[:, :-1])[0]
            counts[kind] = (c.ops, c.matmuls, logits)
        assert torch.allclose(counts["fused"][2], counts["split"][2], atol=1e-5)  # the same function
        step = train_step(m, tokens, levels)

        def split_step():
            with split_projections():
                step()

        t_fused, t_split = best_times([step, split_step], repeats)
        rows.append({"model": name, "batch": B, "seq_len": T,
                     "ops_fused": counts["fused"][0], "ops_split": counts["split"][0],
                     "matmuls_fused": counts["fused"][1], "matmuls_split": counts["split"][1],
                     "split_over_fused_ops": counts["split"][0] / counts["fused"][0],
                     "split_over_fused_matmuls": counts["split"][1] / counts["fused"][1],
                     "fused_s": t_fused, "split_s": t_split, "split_over_fused_time": t_split / t_fused})
    return rows


def print_header(head: str) -> None:
    print(head)
    print("-" * len(head))


def print_tables(result: dict) -> None:
    head = f"{'model':<13}{'params':>9}{'flops/B exec':>14}{'flops/B useful':>16}{'ms/step':>9}{'KB/s':>8}"
    head += f"{'flat (exec) LxD':>17}{'x flat':>8}{'flat (useful) LxD':>19}{'x flat':>8}"
    print_header(head)
    for r in result["models"]:
        fe, fu = r["flat_executed"], r["flat_useful"]
        shape_e = f"{fe['layers'][0]}x{fe['dimensions'][0]}"
        shape_u = f"{fu['layers'][0]}x{fu['dimensions'][0]}"
        print(f"{r['model']:<13}{r['params']:>9,}{r['flops_per_byte_executed'] / 1e6:>13.2f}M"
              f"{r['flops_per_byte_useful'] / 1e6:>15.2f}M{r['seconds'] * 1e3:>9.1f}{r['bytes_per_s'] / 1e3:>8.1f}"
              f"{shape_e:>17}{fe['aunet_time_ratio']:>7.2f}x{shape_u:>19}{fu['aunet_time_ratio']:>7.2f}x")
    print()
    head = (f"{'upsampling':<22}{'B x T -> K':>16}{'batched ms':>12}{'loop ms':>10}{'loop/batched':>14}"
            f"{'all 16 maps ms':>16}{'all/batched':>13}")
    print_header(head)
    for r in result["upsampling"]:
        shape = f"{r['batch']}x{r['seq_len']}->{r['pooled']}"
        print(f"{r['size']:<22}{shape:>16}{r['batched_s'] * 1e3:>12.1f}{r['loop_s'] * 1e3:>10.1f}"
              f"{r['loop_over_batched']:>13.2f}x{r['all_maps_s'] * 1e3:>16.1f}{r['all_maps_over_batched']:>12.2f}x")
    print()
    head = (f"{'stage lengths':<11}{'caps':>13}{'bucketed':>13}{'GF/B useful':>13}{'GF/B exec':>11}{'GF/B padded':>13}"
            f"{'padded/exec':>13}{'exec/useful':>13}{'CPU padded/bucketed':>21}")
    print_header(head)
    for r in result["buckets"]:
        caps = "/".join(map(str, r["stage_caps"][1:]))
        got = "/".join(map(str, r["stage_lengths"][1:]))
        print(f"{r['model']:<11}{caps:>13}{got:>13}{r['useful_flops_per_byte'] / 1e9:>13.2f}{r['executed_flops_per_byte'] / 1e9:>11.2f}"
              f"{r['padded_flops_per_byte'] / 1e9:>13.2f}{r['padded_over_bucketed_flops']:>12.2f}x{r['executed_over_useful']:>12.2f}x"
              f"{r['padded_over_bucketed_time']:>20.2f}x")
    print()
    head = (f"{'projections':<13}{'ops/fwd fused':>15}{'split':>8}{'split/fused':>13}{'matmuls fused':>15}{'split':>8}"
            f"{'split/fused':>13}{'CPU split/fused':>17}")
    print_header(head)
    for r in result.get("fused", []):
        print(f"{r['model']:<13}{r['ops_fused']:>15}{r['ops_split']:>8}{r['split_over_fused_ops']:>12.2f}x"
              f"{r['matmuls_fused']:>15}{r['matmuls_split']:>8}{r['split_over_fused_matmuls']:>12.2f}x"
              f"{r['split_over_fused_time']:>16.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="one repeat (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_model.json")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    result = {
        "threads": torch.get_num_threads(), "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "models": model_rows(repeats), "upsampling": upsample_rows(repeats),
        "buckets": bucket_rows(repeats), "fused": fused_rows(repeats),
        "command": " ".join(["benches/bench_model.py", *sys.argv[1:]]),
    }
    print_tables(result)
    save(args.out, result)


if __name__ == "__main__":
    main()
