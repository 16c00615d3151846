"""AU-Net-2, AU-Net-3, a flat byte-level transformer and a BPE transformer, each trained to the same
FLOPs budget with the same trainer, compared on held-out bits per byte (the paper's claim, small).

    python benches/compare.py [--budget 1e13] [--text FILE ...] [--workdir runs/compare]

1. Corpus: this machine's Python standard library sources (one document per file) plus any
   `--text` files (cut into documents of 1-10 KB); every 20th document is held out.
2. `aunet-segment` shards; the measured share of bytes that open a segment at each stage.
3. A byte-level BPE tokenizer (HuggingFace `tokenizers`) trained on the training split only.
4. Sizing (`aunet.baselines.sizing`): every model's widths are set so that its useful training FLOPs per
   byte are close to budget / (--train-bytes); each then trains for the number of steps that
   spends the budget (within one step).
5. Training: `deepspeed aunet/train.py` for each model (ZeRO-3; 2 CPU ranks by default), held-out
   bpb every 1/--evals of the run. A rerun reuses finished runs (`--fresh` redoes them).
6. Report: a table (printed, and in the JSON), and a plot of held-out bpb against training FLOPs.

BPE bpb = total nats / total bytes / ln 2, counting the bytes each target token stands for.
On a GPU: `--accelerator cuda --ranks N` with a larger --budget, --train-bytes and --seq-len
(see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from corpora import cut, stdlib_files  # noqa: E402
from report import save  # noqa: E402

from aunet.baselines.bpe import load_bpe, train_bpe  # noqa: E402
from aunet.training.checkpoint import latest_complete  # noqa: E402
from aunet.config import config_from_dict, load_config, to_dict  # noqa: E402
from aunet.data import ShardSource  # noqa: E402
from aunet.model.flops import param_count  # noqa: E402
from aunet.baselines.sizing import TEMPLATES, size_to  # noqa: E402
from aunet.segment.layout import is_shard_dir  # noqa: E402

LABELS = {"aunet2": "AU-Net-2", "aunet3": "AU-Net-3", "bytes": "byte transformer", "bpe": "BPE transformer"}


def build_corpus(work: Path, texts: list[Path], train_bytes: int, val_bytes: int, heldout_every: int = 20) -> tuple[Path, Path, int]:
    docs: list[bytes] = [p.read_bytes() for p in stdlib_files() if "test" not in p.parts]
    rng = random.Random(0)
    for path in texts:
        docs += cut(path.read_bytes(), rng)
    train, val, sizes, limits = [], [], [0, 0], (train_bytes, val_bytes)
    for i, doc in enumerate(docs):
        which = 1 if i % heldout_every == 0 else 0
        if sizes[which] >= limits[which]:
            continue
        record = json.dumps({"text": doc.decode("utf-8", "replace")}) + "\n"
        (val if which else train).append(record)
        sizes[which] += len(doc)
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.jsonl").write_text("".join(train))
    (work / "val.jsonl").write_text("".join(val))
    print(f"corpus: {len(train)} training documents ({sizes[0] / 1e6:.2f} MB), {len(val)} held out ({sizes[1] / 1e6:.2f} MB)")
    return work / "train.jsonl", work / "val.jsonl", sizes[0]


def forget_other_corpus(work: Path, train_jsonl: Path, val_jsonl: Path) -> None:
    """Shards, tokenizer and runs are reused only for the corpus they were made from: when the
    corpus differs (other --text, sizes, Python version), they are deleted."""
    import hashlib
    import shutil

    digest = hashlib.sha256(train_jsonl.read_bytes() + b"\0" + val_jsonl.read_bytes()).hexdigest()
    stamp = work / "corpus" / "fingerprint"
    if stamp.is_file() and stamp.read_text().strip() != digest:
        print("the corpus changed since the last run here: its shards, tokenizer and runs are rebuilt")
        for name in ("data", "bpe", "runs"):
            shutil.rmtree(work / name, ignore_errors=True)
    stamp.write_text(digest + "\n")


def segment(inputs: Path, out: Path, strategy: dict[str, str]) -> Path:
    from aunet import segment_corpus

    if not is_shard_dir(out):
        segment_corpus(inputs, out, strategy)  # on_error="fail": the corpus is ours, nothing may be lost
    return out


def stage_fractions(shards: Path) -> tuple[float, ...]:
    """Share of bytes whose level reaches each stage (1.0 for the byte stage)."""
    src = ShardSource(shards)
    counts = np.zeros(src.depth + 1, dtype=np.int64)
    for unit in range(src.units):
        for row in range(src.unit_rows[unit]):
            counts += np.bincount(src.document(unit, row)[1], minlength=src.depth + 1)[: src.depth + 1]
    reach = counts[::-1].cumsum()[::-1]  # bytes with level >= i
    return tuple(float(r / max(reach[0], 1)) for r in reach)


def bytes_per_token(train_jsonl: Path, tokenizer: Path) -> float:
    bpe = load_bpe(tokenizer)
    docs = [json.loads(line)["text"].encode() for line in train_jsonl.read_text().splitlines()]
    tokens = sum(len(t) for t in bpe.encode_batch(docs))
    return sum(len(d) for d in docs) / max(tokens, 1)


def run_config(name: str, sized, steps: int, args, data: dict, tokenizer: Path | None) -> dict:
    cfg, _ = load_config(REPO / "configs" / "tiny_aunet3.yaml")
    raw = to_dict(cfg)
    raw.update(name=f"compare_{name}", dump_dir=str(args.workdir / "runs" / name), steps=steps, seed=args.seed)
    raw["model"] = to_dict(sized.model)
    raw["optim"].update(lr=args.lr, warmup=max(1, steps // 20))
    raw["data"].update(root_dir=str(args.workdir / "data"), sources={data["train"]: 1.0}, seq_len=sized.seq_len,
                       batch_size=args.batch_size, seed=args.seed)
    raw["data"]["regex"] = {"strategy": sized.template.strategy} if sized.template.strategy else None
    raw["data"]["tokenizer"] = {"name": "bpe", "path": str(tokenizer)} if sized.template.bpe else {"name": "bytes", "path": None}
    raw["checkpoint"]["dump"].update(every=steps, keep=1)
    raw["checkpoint"]["eval"].update(every=max(1, math.ceil(steps / args.evals)))
    raw["eval"]["validation"].update(sources={data["val"]: 1.0}, max_steps=None)
    raw["logging"]["freq"] = max(1, min(20, steps // 10))
    config_from_dict(raw)  # fails here, with the key's name, rather than inside the launcher
    return raw


def train(name: str, raw: dict, args) -> float:
    """Run the trainer (or reuse a finished run of the same config); returns its wall seconds."""
    dump = Path(raw["dump_dir"])
    saved = dump / "compare_config.yaml"
    same = saved.is_file() and yaml.safe_load(saved.read_text()) == raw
    finished = latest_complete(dump / "checkpoints") == raw["steps"] and (dump / "wall_seconds").is_file()
    if same and finished and not args.fresh:
        print(f"{name}: reusing the finished run in {dump}")
        return float((dump / "wall_seconds").read_text())
    if dump.exists():
        import shutil

        shutil.rmtree(dump)
    dump.mkdir(parents=True)
    (dump / "compare_config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", TOKENIZERS_PARALLELISM="false")
    if args.accelerator == "cpu":
        env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.ranks)))
    cmd = [str(bin_dir / "deepspeed"), "--num_gpus", str(args.ranks), "--master_port", str(args.port),
           str(REPO / "aunet" / "train.py"), "--config", str(dump / "compare_config.yaml")]
    print(f"\n=== {LABELS[name]}: {raw['steps']} steps\n$ {' '.join(cmd)}", flush=True)
    tic = time.perf_counter()
    with open(dump / "train.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (dump / "train.log").read_text()[-3000:]
        raise RuntimeError(f"{name}: training failed (exit {proc.returncode}); the end of {dump / 'train.log'}:\n{tail}")
    seconds = time.perf_counter() - tic
    (dump / "wall_seconds").write_text(f"{seconds:.1f}\n")
    return seconds


def collect(name: str, raw: dict, sized, step_bytes: float, seconds: float) -> dict:
    records = [json.loads(line) for line in (Path(raw["dump_dir"]) / "metrics.jsonl").read_text().splitlines()]
    val = [(r["step"], r["val_bpb"]) for r in records if "val_bpb" in r]
    speed = [r["bytes_per_s"] for r in records if "bytes_per_s" in r][1:]  # the first window holds start-up
    return {
        "label": LABELS[name],
        "params": param_count(sized.model),
        "dimensions": sized.model.dimensions,
        "layers": sized.model.layers,
        "max_seqlens": sized.model.max_seqlens,
        "seq_len": sized.seq_len,
        "flops_per_byte": sized.flops_per_byte,
        "executed_flops_per_byte": sized.executed_flops_per_byte,
        "steps": raw["steps"],
        "train_bytes": raw["steps"] * step_bytes,
        "train_flops": raw["steps"] * step_bytes * sized.flops_per_byte,
        "curve": [{"step": s, "flops": s * step_bytes * sized.flops_per_byte, "val_bpb": b} for s, b in val],
        "val_bpb": val[-1][1] if val else float("nan"),
        "train_bytes_per_s": statistics.median(speed) if speed else float("nan"),
        "wall_s": seconds,
    }


def table(result: dict) -> str:
    lines = ["| model | params | widths | layers | FLOPs/byte (useful / executed) | steps | train MB | train FLOPs | held-out bpb | train bytes/s |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["models"].values():
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f}M | {r['dimensions']} | {r['layers']} | "
                     f"{r['flops_per_byte'] / 1e6:.2f}M / {r['executed_flops_per_byte'] / 1e6:.2f}M | {r['steps']} | "
                     f"{r['train_bytes'] / 1e6:.1f} | {r['train_flops']:.2e} | {r['val_bpb']:.3f} | {r['train_bytes_per_s'] / 1e3:.1f}k |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in result["models"].values():
        ax.plot([p["flops"] for p in r["curve"]], [p["val_bpb"] for p in r["curve"]], marker="o", label=r["label"])
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (useful, estimated)")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(f"Equal budget {result['budget']:.1e} FLOPs ({result['machine']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def combine(paths: list[Path], out: Path) -> None:
    """Final held-out bpb of each model against the budget, across finished comparisons."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["budget"])
    names = [n for n in LABELS if all(n in r["models"] for r in results)]
    print("| budget (FLOPs) | " + " | ".join(LABELS[n] for n in names) + " |")
    print("| ---: | " + " | ".join("---:" for _ in names) + " |")
    for r in results:
        print(f"| {r['budget']:.0e} | " + " | ".join(f"{r['models'][n]['val_bpb']:.3f}" for n in names) + " |")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for n in names:
        ax.plot([r["budget"] for r in results], [r["models"][n]["val_bpb"] for r in results], marker="o", label=LABELS[n])
    ax.set_xscale("log")
    ax.set_xlabel("training budget (FLOPs, useful, estimated)")
    ax.set_ylabel("held-out bits per byte at the end of training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=1e13, help="training FLOPs per model")
    p.add_argument("--train-bytes", type=float, default=10e6, help="sets the FLOPs per byte: budget / train bytes")
    p.add_argument("--text", type=Path, nargs="*", default=[], help="more text files for the corpus")
    p.add_argument("--train-mb", type=float, default=12.0, help="training split size")
    p.add_argument("--val-mb", type=float, default=0.3, help="held-out split size")
    p.add_argument("--models", nargs="+", default=list(TEMPLATES), choices=list(TEMPLATES))
    p.add_argument("--seq-len", type=int, default=512, help="bytes per training sequence")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per rank per step")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--accelerator", default="cpu", help="cpu (DS_ACCELERATOR=cpu) or cuda")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--bpe-vocab", type=int, default=2048)
    p.add_argument("--evals", type=int, default=6, help="held-out evaluations per run")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--port", type=int, default=29531)
    p.add_argument("--workdir", type=Path, default=Path("runs/compare"))
    p.add_argument("--fresh", action="store_true", help="retrain models whose finished runs exist")
    p.add_argument("--out", type=Path, default=HERE / "results" / "compare.json")
    p.add_argument("--plot", type=Path, default=None, help="default: --out with .png")
    p.add_argument("--combine", type=Path, nargs="+", help="no training: plot the final bpb of finished comparisons "
                   "(their JSON files) against their budgets, to --plot")
    args = p.parse_args(argv)
    if args.combine:
        combine(args.combine, args.plot or HERE / "results" / "compare_budgets.png")
        return 0
    args.workdir = args.workdir.resolve()
    started = time.perf_counter()

    train_jsonl, val_jsonl, _ = build_corpus(args.workdir / "corpus", args.text, int(args.train_mb * 1e6), int(args.val_mb * 1e6))
    forget_other_corpus(args.workdir, train_jsonl, val_jsonl)
    # Shards per strategy list (flat models read the word1 shards and ignore their masks).
    root = args.workdir / "data"
    shards = {}
    for name in ("aunet2", "aunet3"):
        tag = "_".join(TEMPLATES[name].strategy)
        shards[name] = {"train": f"train_{tag}", "val": f"val_{tag}"}
        segment(train_jsonl, root / shards[name]["train"], TEMPLATES[name].strategy)
        segment(val_jsonl, root / shards[name]["val"], TEMPLATES[name].strategy)
    shards["bytes"] = shards["bpe"] = shards["aunet2"]
    fractions = stage_fractions(root / shards["aunet3"]["train"])
    print("share of bytes reaching each stage: " + ", ".join(f"{f:.3f}" for f in fractions))

    tokenizer, per_token = None, 1.0
    if "bpe" in args.models:
        tokenizer = args.workdir / "bpe" / f"bpe{args.bpe_vocab}.json"
        if not tokenizer.is_file():
            train_bpe((json.loads(line)["text"] for line in train_jsonl.read_text().splitlines()), args.bpe_vocab, tokenizer)
        per_token = bytes_per_token(train_jsonl, tokenizer)
        print(f"BPE tokenizer ({args.bpe_vocab} ids, trained on the training split): {per_token:.2f} bytes per token")

    target = args.budget / args.train_bytes
    result = {"budget": args.budget, "target_flops_per_byte": target, "stage_fractions": fractions,
              "bpe_bytes_per_token": per_token, "bpe_vocab": args.bpe_vocab, "ranks": args.ranks,
              "batch_size": args.batch_size, "seq_len_bytes": args.seq_len, "lr": args.lr,
              "machine": f"{os.cpu_count()} CPU cores" if args.accelerator == "cpu" else f"{args.ranks} x {args.accelerator}",
              "date": time.strftime("%Y-%m-%d"), "command": "python benches/compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "models": {}}
    for name in args.models:
        template = TEMPLATES[name]
        sized = size_to(template, target, args.seq_len, fractions, per_token if template.bpe else 1.0,
                        load_bpe(tokenizer).vocab_size if template.bpe else 258)
        step_bytes = args.batch_size * args.ranks * sized.seq_len * (per_token if template.bpe else 1.0)
        steps = max(1, round(args.budget / (sized.flops_per_byte * step_bytes)))
        raw = run_config(name, sized, steps, args, shards[name], tokenizer)
        seconds = train(name, raw, args)
        result["models"][name] = collect(name, raw, sized, step_bytes, seconds)
        print(f"{LABELS[name]}: held-out bpb {result['models'][name]['val_bpb']:.3f}", flush=True)

    result["wall_s"] = time.perf_counter() - started
    print("\n" + table(result))
    save(args.out, result)
    plot(result, args.plot or args.out.with_suffix(".png"))
    print(f"wrote {args.plot or args.out.with_suffix('.png')}; {result['wall_s'] / 60:.1f} min in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
