"""`aunet`: commands on trained models.

    aunet export --checkpoints DIR [--step N] --out DIR
    aunet sample --model DIR --prompt TEXT [--max-bytes N] [--temperature T] [--top-k K] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aunet", description="Commands on trained AU-Net models.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="ZeRO checkpoint -> model.safetensors + config.yaml")
    e.add_argument("--checkpoints", type=Path, required=True, help="the run's checkpoint directory (<dump_dir>/checkpoints)")
    e.add_argument("--step", type=int, help="which step (default: the newest complete one)")
    e.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("sample", help="sample text from an exported model (uncached)")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--prompt", default="")
    s.add_argument("--max-bytes", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.command == "export":
            from aunet.export import export_checkpoint

            path = export_checkpoint(args.checkpoints, args.out, args.step)
            print(f"wrote {path} and {path.parent / 'config.yaml'}")
        else:
            from aunet.export import load_model
            from aunet.sampling import sample

            model, cfg = load_model(args.model)
            text = sample(model, cfg.data.regex.strategy, args.prompt.encode(), args.max_bytes, args.temperature, args.top_k, args.seed)
            sys.stdout.write(args.prompt + text.decode("utf-8", "replace") + "\n")
    except (FileNotFoundError, ValueError) as err:
        print(f"aunet {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
