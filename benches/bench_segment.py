"""Segmentation throughput: the `regex`-package oracle vs the Rust segmenter, side by side.

Prints a table and writes JSON. For each corpus and strategy set: MB/s of the oracle, of ours
on 1 thread and on every available thread (on the same documents), the ratios, and the share
of bytes whose causal (streaming) level differs from the full-document level. Second table:
`levels_batch(threads=1)` against one `levels` call per document, on 1-10 KB and on 50-600 byte
documents (the same text re-cut), timed in interleaved rounds.

    .venv/bin/python benches/bench_segment.py [--mb 40] [--oracle-mb 2] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import save  # noqa: E402
import random  # noqa: E402

from corpora import cut, multilingual_docs, stdlib_docs  # noqa: E402
from oracle import OracleSegmenter  # noqa: E402

from aunet import Segmenter  # noqa: E402

SETS = {
    "word1": {"word1": "1@1"},
    "word1+word2": {"word1": "1@1", "word2": "2@1"},
    "word1+word2+word4": {"word1": "1@1", "word2": "2@1", "word4": "4@1"},
    "pretok": {"pretok": ""},
    "punct": {"punct": ""},
}


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def take(docs: list[bytes], limit: int) -> list[bytes]:
    out, total = [], 0
    for d in docs:
        if total >= limit:
            break
        out.append(d)
        total += len(d)
    return out


def causal_gap(seg: Segmenter, docs: list[bytes]) -> tuple[float, float]:
    """Share of bytes whose streaming level differs from the full-document level: over all
    bytes, and over the last bytes of characters only. A byte inside a character gets 0 in
    both (SPEC section 2), so the gap comes from character-final bytes, where a later byte
    can still change a match (lookahead, a white-space run that reaches a newline)."""
    differ = total = differ_final = total_final = 0
    for d in docs:
        full = seg.levels(d)
        causal = seg.stream().push(d)
        arr = np.frombuffer(d, dtype=np.uint8)
        # A byte ends a character unless the next byte is a UTF-8 continuation byte.
        final = np.ones(len(d), dtype=bool)
        final[:-1] = (arr[1:] & 0xC0) != 0x80
        diff = full != causal
        differ += int(diff.sum())
        total += len(d)
        differ_final += int(diff[final].sum())
        total_final += int(final.sum())
    return differ / max(total, 1), differ_final / max(total_final, 1)


def batch_vs_single(docs: list[bytes], repeats: int) -> list[dict]:
    """One `levels_batch(threads=1)` call against one `levels` call per document."""
    seg = Segmenter(SETS["word1+word2"])
    rows = []
    for name, corpus in (("1-10 KB documents", docs), ("50-600 B documents", cut(b"".join(docs), random.Random(0), 50, 600))):
        fns = [lambda: [seg.levels(d) for d in corpus], lambda: seg.levels_batch(corpus, threads=1)]
        best = [float("inf")] * 2
        for _ in range(max(repeats, 3)):
            for i, fn in enumerate(fns):
                t = time.perf_counter()
                fn()
                best[i] = min(best[i], time.perf_counter() - t)
        size = sum(map(len, corpus))
        rows.append({"corpus": name, "docs": len(corpus), "levels_per_doc_mb_s": size / best[0] / 1e6,
                     "levels_batch_1t_mb_s": size / best[1] / 1e6, "batch_time_over_per_doc": best[1] / best[0]})
    return rows


def run(mb: float, oracle_mb: float, repeats: int) -> dict:
    threads = len(os.sched_getaffinity(0))
    corpora = {
        "stdlib": stdlib_docs(int(mb * 1e6)),
        "multilingual": multilingual_docs(int(mb * 1e6)),
    }
    rows = []
    for corpus, docs in corpora.items():
        size = sum(map(len, docs))
        small = take(docs, int(oracle_mb * 1e6))
        small_size = sum(map(len, small))
        for name, spec in SETS.items():
            seg, oracle = Segmenter(spec), OracleSegmenter(spec)
            seg.levels(b"warm up: builds the class tables once")
            t_oracle = best_of(lambda: [oracle.levels(d) for d in small], 1)
            # Ours on the oracle's documents (the ratio) and on the whole corpus (threads).
            t_small = best_of(lambda: seg.levels_batch(small, threads=1), repeats)
            t_one = best_of(lambda: seg.levels_batch(docs, threads=1), repeats)
            t_all = best_of(lambda: seg.levels_batch(docs, threads=threads), repeats)
            rows.append({
                "corpus": corpus,
                "strategy": name,
                "docs": len(docs),
                "mean_doc_bytes": size // max(len(docs), 1),
                "oracle_mb_s": small_size / t_oracle / 1e6,
                "ours_1t_same_docs_mb_s": small_size / t_small / 1e6,
                "ours_1t_mb_s": size / t_one / 1e6,
                f"ours_{threads}t_mb_s": size / t_all / 1e6,
                "speedup_vs_oracle_1t": t_oracle / t_small,
                "thread_scaling": t_one / t_all,
                **dict(zip(("causal_gap", "causal_gap_char_final"), causal_gap(seg, small))),
            })
    return {"threads": threads, "machine": platform.machine(), "python": platform.python_version(), "rows": rows,
            "batch_vs_levels": batch_vs_single(corpora["stdlib"], repeats)}


def print_table(result: dict) -> None:
    th = result["threads"]
    head = f"{'corpus':<13}{'strategy':<19}{'oracle MB/s':>12}{'ours 1t':>9}{'x oracle':>10}{f'ours {th}t':>9}{f'{th}t/1t':>8}{'causal gap':>12}{'(char-final)':>13}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['corpus']:<13}{r['strategy']:<19}{r['oracle_mb_s']:>12.2f}{r['ours_1t_mb_s']:>9.0f}"
            f"{r['speedup_vs_oracle_1t']:>9.0f}x{r[f'ours_{th}t_mb_s']:>9.0f}{r['thread_scaling']:>7.2f}x{r['causal_gap']:>11.2%}{r['causal_gap_char_final']:>12.2%}"
        )
    print()
    head = f"{'stdlib, word1+word2':<22}{'docs':>8}{'levels each MB/s':>18}{'levels_batch 1t MB/s':>22}{'time batch/each':>17}"
    print(head)
    print("-" * len(head))
    for r in result["batch_vs_levels"]:
        print(f"{r['corpus']:<22}{r['docs']:>8}{r['levels_per_doc_mb_s']:>18.0f}{r['levels_batch_1t_mb_s']:>22.0f}"
              f"{r['batch_time_over_per_doc']:>16.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=40.0, help="corpus size for our timings, per corpus")
    parser.add_argument("--oracle-mb", type=float, default=2.0, help="share of it the oracle runs on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_segment.json")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.oracle_mb, args.repeats = 0.3, 0.05, 1
    result = run(args.mb, args.oracle_mb, args.repeats)
    result["command"] = " ".join(["benches/bench_segment.py", *sys.argv[1:]])
    print_table(result)
    save(args.out, result)


if __name__ == "__main__":
    main()
