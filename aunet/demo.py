"""The main job, end to end on one machine, nothing downloaded (`make demo`):

1. build a corpus from this machine's Python standard library sources (a held-out split too),
2. segment it with `aunet-segment` into Arrow shards,
3. train a tiny AU-Net-3 with 2 CPU ranks under the DeepSpeed launcher (ZeRO-3),
4. evaluate held-out bits per byte, export the model, and print a generated sample.

    python -m aunet.demo [--workdir runs/demo] [--steps 400] [--ranks 2]

Everything runs on one thread per process (the ranks, the export, the evaluation here): on a
shared 2-core machine OpenMP threads that wait on each other turn other load into long stalls
(the held-out evaluation and the sample took 11-13 s with torch's default 2 threads against 2 s
with one, at a load of 3), while one thread per process degrades gracefully. The run saves one
checkpoint (the last step, which the export reads) and evaluates held-out bpb twice, half-way
and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

from aunet.inference.evaluate import heldout_bpb
from aunet.inference.export import load_model
from aunet.inference.generate import Generator, decode_utf8

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "tiny_aunet3.yaml"


_T0 = time.monotonic()


def banner(text: str) -> None:
    print(f"\n=== [{time.monotonic() - _T0:5.0f} s] {text}", flush=True)


def build_corpus(work: Path, train_bytes: int, heldout_every: int = 20) -> tuple[Path, Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    train, heldout, size = [], [], 0
    for i, path in enumerate(files):
        text = path.read_bytes().decode("utf-8", "replace")
        record = json.dumps({"text": text, "path": str(path.relative_to(root))}) + "\n"
        if i % heldout_every == 0:
            heldout.append(record)
        elif size < train_bytes:
            train.append(record)
            size += len(text)
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.jsonl").write_text("".join(train))
    (work / "heldout.jsonl").write_text("".join(heldout))
    print(f"{len(train)} training files ({size / 1e6:.1f} MB), {len(heldout)} held-out files, from {root}")
    return work / "train.jsonl", work / "heldout.jsonl"


def run(cmd: list[str], env: dict | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--train-mb", type=float, default=8.0)
    args = p.parse_args(argv)
    started = time.monotonic()
    bin_dir = Path(sys.executable).parent
    work = args.workdir.resolve()
    strategy = ["--strategy", "word1=1@1", "--strategy", "word2=2@1"]

    banner("1. corpus: this machine's Python standard library sources")
    train_jsonl, heldout_jsonl = build_corpus(work / "corpus", int(args.train_mb * 1e6))

    banner("2. segment with aunet-segment (Arrow shards of bytes + level masks)")
    run([str(bin_dir / "aunet-segment"), str(train_jsonl), "--out", str(work / "data" / "stdlib"), *strategy, "--no-progress"])
    run([str(bin_dir / "aunet-segment"), str(heldout_jsonl), "--out", str(work / "data" / "heldout"), *strategy, "--no-progress"])
    run([str(bin_dir / "aunet-segment"), "inspect", str(work / "data" / "heldout"), "--limit", "1", "--max-bytes", "160"])

    banner(f"3. train a tiny AU-Net-3: {args.ranks} CPU ranks, DeepSpeed ZeRO-3, {args.steps} steps (bpb should fall)")
    env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"), OMP_NUM_THREADS="1",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    dump = work / "run"
    run([str(bin_dir / "deepspeed"), "--num_gpus", str(args.ranks), str(REPO / "aunet" / "train.py"), "--config", str(CONFIG),
         f"data.root_dir={work / 'data'}", f"dump_dir={dump}", f"steps={args.steps}", "logging.freq=20",
         f"checkpoint.dump.every={args.steps}", "eval.validation.sources.heldout=1.0",
         f"checkpoint.eval.every={max(1, args.steps // 2)}"], env=env)
    log = [r for r in map(json.loads, (dump / "metrics.jsonl").read_text().splitlines()) if "bpb" in r]
    tail = log[-5:]  # one logging window is noisy: average the last five
    print(f"training bpb: {log[0]['bpb']:.3f} at step {log[0]['step']} -> {sum(r['bpb'] for r in tail) / len(tail):.3f} "
          f"(mean of steps {tail[0]['step']}-{tail[-1]['step']})")

    banner("4. export, evaluate held-out bpb, generate")
    run([str(bin_dir / "aunet"), "export", "--checkpoints", str(dump / "checkpoints"), "--out", str(work / "export")], env=env)

    torch.set_num_threads(1)  # see the module docstring
    model, cfg = load_model(work / "export")
    result = heldout_bpb(model, {str(work / "data" / "heldout"): 1.0}, cfg.data.seq_len, cfg.data.batch_size, max_batches=40)
    print(f"held-out bpb: {result['bpb']:.3f} over {result['bytes']:,} bytes")
    prompt = b"def "
    (text,) = Generator(model, cfg.data.regex.strategy).generate([prompt], max_bytes=200, temperature=0.7, top_k=20, seed=0)
    print("sample (cached generator; prompt 'def ', 200 bytes, temperature 0.7, top-k 20):")
    print(decode_utf8(prompt + text))
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s; everything is under {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
