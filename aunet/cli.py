"""`aunet`: commands on trained models.

    aunet export --checkpoints DIR [--step N] --out DIR
    aunet generate --model DIR --prompt TEXT [--max-bytes N] [--temperature T] [--top-k K] [--top-p P] [--stop S] [--seed S]
    aunet eval --model DIR --data SHARD_DIR_OR_FILES... [--max-batches N] [--out FILE]
    aunet sample ...   (the uncached sampler, for comparison)
    aunet lm-eval ARGS...   lm-evaluation-harness's own command line, with `--model aunet`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:
        # Every further argument belongs to the harness (its own parser, subcommands and help).
        from aunet.lm_eval_adapter import main as lm_eval_main

        return lm_eval_main(argv[1:])
    p = argparse.ArgumentParser(prog="aunet", description="Commands on trained AU-Net models.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="ZeRO checkpoint -> model.safetensors + config.yaml")
    e.add_argument("--checkpoints", type=Path, required=True, help="the run's checkpoint directory (<dump_dir>/checkpoints)")
    e.add_argument("--step", type=int, help="which step (default: the newest complete one)")
    e.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("generate", help="generate text with the cached hierarchical generator, streaming")
    g.add_argument("--model", type=Path, required=True, help="an `aunet export` directory")
    g.add_argument("--prompt", default="")
    g.add_argument("--max-bytes", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=[], help="stop after this string (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("eval", help="bits per byte on shard directories or raw text, as JSON")
    v.add_argument("--model", type=Path, required=True)
    v.add_argument("--data", nargs="+", required=True, help="aunet-segment directories, JSONL/.zst/Parquet/Arrow corpora, or text files (one document each)")
    v.add_argument("--max-batches", type=int, help="batches per source (default: one pass)")
    v.add_argument("--batch-size", type=int, default=8)
    v.add_argument("--out", type=Path, help="also write the JSON here")
    s = sub.add_parser("sample", help="sample text from an exported model (uncached)")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--prompt", default="")
    s.add_argument("--max-bytes", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    sub.add_parser("lm-eval", help="run EleutherAI's lm-evaluation-harness with the model name 'aunet' registered",
                   add_help=False)
    args = p.parse_args(argv)
    try:
        if args.command == "export":
            from aunet.export import export_checkpoint

            path = export_checkpoint(args.checkpoints, args.out, args.step)
            print(f"wrote {path} and {path.parent / 'config.yaml'}")
        elif args.command == "generate":
            return generate(args)
        elif args.command == "eval":
            return evaluate(args)
        else:
            from aunet.export import load_model
            from aunet.sampling import sample

            model, cfg = load_model(args.model)
            require_bytes(cfg, "sample")
            strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
            text = sample(model, strategy, args.prompt.encode(), args.max_bytes, args.temperature, args.top_k, args.seed)
            sys.stdout.write(args.prompt + text.decode("utf-8", "replace") + "\n")
    except (FileNotFoundError, ValueError) as err:
        print(f"aunet {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def generate(args) -> int:
    """Stream bytes to stdout as they are sampled (an incremental UTF-8 decoder holds back a
    character until it is complete)."""
    import codecs

    import torch

    from aunet.export import load_model
    from aunet.generate import Generator, sample_byte

    model, cfg = load_model(args.model)
    require_bytes(cfg, "generate")
    gen = Generator(model, cfg.data.regex.strategy if cfg.data.regex is not None else None)
    prompt = args.prompt.encode()
    (logits,) = gen.prefill([prompt])
    state = gen.states[0]
    rng = torch.Generator().manual_seed(args.seed)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = [s.encode() for s in args.stop]
    out = bytearray()
    sys.stdout.write(args.prompt)
    limit = model.args.max_seqlens[0]
    for n in range(args.max_bytes):
        b = sample_byte(logits, args.temperature, args.top_k, args.top_p, rng)
        out.append(b)
        sys.stdout.write(decoder.decode(bytes([b])))
        sys.stdout.flush()
        if any(out.endswith(s) for s in stops if s) or (limit != -1 and len(state.tokens) >= limit):
            break
        if n + 1 < args.max_bytes:
            logits = gen.push(state, b)
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0


def require_bytes(cfg, command: str) -> None:
    if cfg.data.tokenizer.name != "bytes":
        raise ValueError(f"{command} works on byte-level models; this one reads {cfg.data.tokenizer.name} tokens "
                         "(a comparison baseline: evaluate it with `aunet eval`)")


def evaluate(args) -> int:
    import contextlib
    import json
    import math
    import tempfile

    from aunet.evaluate import heldout_bpb
    from aunet.export import load_model
    from aunet.segment_cli import run as segment

    model, cfg = load_model(args.model)
    strategy = cfg.data.regex.strategy if cfg.data.regex is not None else {"word1": "1@1"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, item in enumerate(args.data):
            path = Path(item)
            if not (path / "manifest.json").is_file():
                # Raw input: a file in no corpus format (.txt, .md, source code) is one document;
                # corpora are segmented by the aunet-segment code, with the model's strategy.
                from aunet.segment_readers import detect_format

                inputs = [item]
                if path.is_file() and detect_format(path) is None:
                    jsonl = Path(tmp) / f"txt{i}.jsonl"
                    jsonl.write_text(json.dumps({"text": path.read_text(errors="surrogateescape")}) + "\n")
                    inputs = [str(jsonl)]
                shard_dir = Path(tmp) / f"source{i}"
                with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON report
                    code = segment([*inputs, "--out", str(shard_dir), "--no-progress", "--on-error", "skip",
                                    *[a for k, val in strategy.items() for a in ("--strategy", f"{k}={val}")]])
                if code not in (0, 3):
                    raise ValueError(f"{item}: could not be segmented")
                path = shard_dir
            tokenizer = cfg.data.tokenizer.path if cfg.data.tokenizer.name == "bpe" else None
            r = heldout_bpb(model, {str(path): 1.0}, cfg.data.seq_len, args.batch_size, args.max_batches, tokenizer=tokenizer,
                            add_bos=cfg.data.add_bos, add_eos=cfg.data.add_eos)
            results[item] = r
    total_bytes = sum(r["bytes"] for r in results.values())
    overall = sum(r["bpb"] * r["bytes"] for r in results.values()) / max(total_bytes, 1)
    report = {"model": str(args.model), "sources": results, "overall": {"bpb": overall, "bytes": total_bytes}}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(math.isfinite(r["bpb"]) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
