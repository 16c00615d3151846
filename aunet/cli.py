"""`aunet`: commands on trained models. Argument parsing only; each command is one call into
the library.

    aunet export (--checkpoints DIR [--step N] | --model EXPORT_DIR) --out DIR [--format aunet|hf]
    aunet import-lingua CHECKPOINT_DIR --out DIR
    aunet generate --model DIR [--prompt TEXT]... [--prompts-file FILE] [--prompt-file PATH]... [--batch-size B] [--max-bytes N]
                   [--temperature T] [--top-k K] [--top-p P] [--stop S] [--seed S] [--chunk N]
    aunet eval --model DIR --data SHARD_DIR_OR_FILES... [--max-batches N] [--out FILE]
    aunet lm-eval ARGS...   lm-evaluation-harness's own command line, with `--model aunet`
    aunet serve HF_DIR ARGS...   `transformers serve` (OpenAI-compatible HTTP) on an HF export

Each command imports the library it calls inside its own function, for lazy loading only:
`aunet --help` and argument errors answer without loading torch, and the optional extras
(lm-eval, transformers) load only for the commands that use them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aunet", description="Commands on trained AU-Net models.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="ZeRO checkpoint -> model.safetensors + config.yaml (or a transformers directory)",
                       description="Gather a ZeRO checkpoint's weights into DIR/model.safetensors + DIR/config.yaml, which "
                                   "load without DeepSpeed or pickle. DeepSpeed checkpoints are pickles, loaded with "
                                   "torch.load(weights_only=False), which can run code stored in the file: only export "
                                   "checkpoints you trust. With --format hf, write a directory that transformers' "
                                   "AutoModelForCausalLM/AutoTokenizer load (trust_remote_code=True), from the checkpoints "
                                   "or from an existing export (--model).")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoints", type=Path, help="the run's checkpoint directory (<dump_dir>/checkpoints)")
    source.add_argument("--model", type=Path, help="an `aunet export` directory to convert (with --format hf)")
    e.add_argument("--step", type=int, help="which step (default: the newest complete one)")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--format", choices=("aunet", "hf"), default="aunet",
                   help="aunet: model.safetensors + config.yaml; hf: a HuggingFace transformers directory")
    i = sub.add_parser("import-lingua", help="a lingua (apps/aunet) checkpoint -> model.safetensors + config.yaml, "
                       "as `aunet export` writes them",
                       description="Convert a checkpoint of the reference implementation (facebookresearch/lingua, "
                                   "apps/aunet: a torch distributed checkpoint directory with its params.json) into an "
                                   "`aunet export` directory: the model's weights, renamed and with Q/K/V and W1/W3 fused, "
                                   "and a config built from the reference's model section. The checkpoint's .metadata "
                                   "file is a pickle, which can run code stored in it: only import checkpoints you trust.")
    i.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR",
                   help="a lingua step directory (checkpoints/0000002000), or its checkpoints directory (newest step)")
    i.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("generate", help="generate text with the cached hierarchical generator (one prompt: "
                       "streamed; several: one batch, one JSON line per prompt)")
    g.add_argument("--model", type=Path, required=True, help="an `aunet export` directory")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: one empty prompt)")
    g.add_argument("--prompts-file", type=Path, help="more prompts: one JSON string per line")
    g.add_argument("--prompt-file", type=file_bytes, action="append", default=[], metavar="PATH",
                   help="a prompt read from this file as raw bytes, any bytes (repeatable)")
    g.add_argument("--batch-size", type=whole(1), default=32, help="prompts generated together (several prompts)")
    g.add_argument("--max-bytes", type=whole(0), default=200)
    g.add_argument("--temperature", type=sampling_setting("temperature", float), default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=sampling_setting("top_k", int), default=0, help="0 = no limit")
    g.add_argument("--top-p", type=sampling_setting("top_p", float), default=1.0, help="in (0, 1]; 1 = no limit")
    g.add_argument("--stop", action="append", default=[], type=stop_bytes,
                   help="stop after this string (repeatable; its bytes as the shell passes them)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk", type=whole(1), default=None,
                   help="bytes generated between two reads of the output by the host (default: the generator's, "
                        "16): streamed text arrives in pieces of this size; where levels come from the segmenter, "
                        "each byte is read anyway")
    placement_options(g)
    v = sub.add_parser("eval", help="bits per byte on shard directories or raw text, as JSON")
    v.add_argument("--model", type=Path, required=True)
    v.add_argument("--data", nargs="+", required=True, help="aunet-segment directories, JSONL/.zst/Parquet/Arrow corpora, or text files (one document each)")
    v.add_argument("--max-batches", type=whole(1), help="batches per source (default: one pass)")
    v.add_argument("--batch-size", type=whole(1), default=8)
    v.add_argument("--out", type=Path, help="also write the JSON here")
    v.add_argument("--allow-shard-mismatch", action="store_true",
                   help="score shard directories segmented with another strategy list or depth than the model's "
                        "(refused by default; each difference is reported)")
    placement_options(v)
    sub.add_parser("lm-eval", help="run EleutherAI's lm-evaluation-harness with the model name 'aunet' registered",
                   add_help=False)
    sub.add_parser("serve", help="serve an `aunet export --format hf` directory with transformers' OpenAI-compatible "
                                 "server (`transformers serve`'s options follow the directory)", add_help=False)
    return p


def placement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="where the model runs: cuda, cuda:N or cpu (default: the GPU when there is one)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                        help="precision (default: the config's eval.generator.dtype on a GPU, fp32 on a CPU)")


def whole(low: int):
    """An argparse type: a whole number >= `low` (rc 2 and the argument's name otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def file_bytes(path: str) -> bytes:
    """An argparse type: the bytes of a file, read at parse time (an unreadable one is rc 2)."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror or e}") from None


def sampling_setting(name: str, kind: type):
    """An argparse type for a sampling setting, by `aunet.inference.generate.SAMPLING_RULES`:
    refused at parse time, before a model is loaded or any output is printed."""
    def parse(text: str):
        from aunet.inference.generate import check_sampling

        try:
            value = kind(text)
            check_sampling(**{name: value})
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) if "must be" in str(e) else f"expected a number, got {text!r}") from None
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:
        # Every further argument belongs to the harness (its own parser, subcommands and help).
        from aunet.inference.lm_eval_adapter import main as lm_eval_main

        return lm_eval_main(argv[1:])
    if argv[:1] == ["serve"]:
        # Every further argument is `transformers serve`'s (its own parser and help).
        from aunet.hf.serve import serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    from aunet.segment import SegmentError

    try:
        return {"export": export, "import-lingua": import_lingua, "generate": generate, "eval": evaluate}[args.command](args)
    except (FileNotFoundError, ValueError, SegmentError) as err:
        print(f"aunet {args.command}: error: {err}", file=sys.stderr)
        return 1


def export(args) -> int:
    if args.format == "hf":
        from aunet.hf.export import export_hf, export_hf_from_export

        if args.model is not None and args.step is not None:
            raise ValueError("--step picks a checkpoint: it goes with --checkpoints, not --model")
        out = export_hf_from_export(args.model, args.out) if args.model is not None else export_hf(args.checkpoints, args.out, args.step)
        print(f"wrote {out} (transformers: AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True))")
        return 0
    if args.model is not None:
        raise ValueError("--model converts an export: it goes with --format hf (an `aunet export` directory is already this format)")
    from aunet.inference.export import export_checkpoint

    path = export_checkpoint(args.checkpoints, args.out, args.step)
    print(f"wrote {path} and {path.parent / 'config.yaml'}")
    return 0


def import_lingua(args) -> int:
    from aunet.inference.import_lingua import import_lingua as run

    path = run(args.checkpoint, args.out)
    print(f"wrote {path} and {path.parent / 'config.yaml'}")
    return 0


def generate(args) -> int:
    """One prompt: stream bytes to stdout as they are sampled (an incremental UTF-8 decoder
    holds back a character until it is complete). Several: generate them in batches and print
    one JSON object per prompt, in input order: {"prompt": ..., "generated": ...}. Prompts are
    bytes: --prompt and --prompts-file text as UTF-8, each --prompt-file as it is."""
    import codecs
    import json

    from aunet.inference.export import load_model
    from aunet.inference.generate import Generator, decode_utf8
    from aunet.inference.placement import pick_device, pick_dtype

    # Command-line text is the bytes the shell passed (Python decoded them with surrogateescape),
    # so that --prompt gives the model what --prompt-file would; JSON strings are text, and a
    # lone surrogate (only an escape gives one) keeps its surrogatepass bytes.
    prompts = [os.fsencode(p) for p in args.prompt or []]
    if args.prompts_file is not None:
        prompts += [p.encode("utf-8", "surrogatepass") for p in read_prompts(args.prompts_file)]
    prompts += args.prompt_file
    if not prompts:
        prompts = [b""]
    model, cfg = load_model(args.model)
    device = pick_device(args.device)
    model = model.to(device, pick_dtype(device, cfg.eval.generator.dtype, args.dtype))
    if cfg.data.tokenizer.name != "bytes":
        raise ValueError(f"generate works on byte-level models; this one reads {cfg.data.tokenizer.name} tokens "
                         "(a comparison baseline: evaluate it with `aunet eval`)")
    limit = cfg.eval.generator.max_tokens
    if args.max_bytes >= limit:
        raise ValueError(f"--max-bytes {args.max_bytes} leaves no room for a prompt within the model's "
                         f"eval.generator.max_tokens = {limit} bytes")
    prompts = [keep_tail(p, limit - args.max_bytes) for p in prompts]
    gen = Generator(model, cfg.data.regex.strategy if cfg.data.regex is not None else None,
                    **({} if args.chunk is None else {"chunk": args.chunk}))
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    stop=args.stop, seed=args.seed)
    if len(prompts) == 1:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sys.stdout.write(decoder.decode(prompts[0]))
        for b in gen.stream(prompts[0], args.max_bytes, **sampling):
            sys.stdout.write(decoder.decode(bytes([b])))
            sys.stdout.flush()
        sys.stdout.write(decoder.decode(b"", final=True) + "\n")
        return 0
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start:start + args.batch_size]
        outs = gen.generate(chunk, args.max_bytes, **sampling)
        for prompt, out in zip(chunk, outs):
            sys.stdout.write(json_line({"prompt": prompt_text(prompt), "generated": decode_utf8(out)}))
        sys.stdout.flush()
    return 0


def json_line(record: dict) -> str:
    """One JSON line, readable text where it can be, and a lone surrogate written as its
    escape (`\\ud800`): it has no UTF-8 form, and printing it raw would fail the whole output."""
    import json
    import re

    line = json.dumps(record, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", line) + "\n"


def stop_bytes(text: str) -> bytes:
    """An argparse type: a stop string as the bytes the shell passed, checked at parse time."""
    data = os.fsencode(text)
    if not data:
        raise argparse.ArgumentTypeError("a stop string needs at least one byte")
    return data


def prompt_text(prompt: bytes) -> str:
    """A prompt as JSON can hold it: its text (lone surrogates as given), or for bytes that are
    not UTF-8 (a --prompt-file) the text with U+FFFD for each invalid byte."""
    try:
        return prompt.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return prompt.decode("utf-8", "replace")


def keep_tail(prompt: str | bytes, room: int) -> str | bytes:
    """The last `room` bytes of `prompt` (text: whole characters; bytes: not starting on a UTF-8
    continuation byte): prompt plus generation stay within `eval.generator.max_tokens`, as the
    reference's generator keeps them."""
    if isinstance(prompt, str):
        return keep_tail(prompt.encode("utf-8", "surrogatepass"), room).decode("utf-8", "surrogatepass")
    data = prompt
    if len(data) <= room:
        return prompt
    tail = data[len(data) - room:]
    while tail and (tail[0] & 0xC0) == 0x80:  # do not start inside a character
        tail = tail[1:]
    print(f"aunet generate: prompt of {len(data)} bytes cut to its last {len(tail)} "
          "(eval.generator.max_tokens minus --max-bytes)", file=sys.stderr)
    return tail


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file of one JSON string per line (blank lines skipped)."""
    import json

    prompts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not JSON ({err.msg})") from None
            if not isinstance(value, str):
                raise ValueError(f"{path}, line {n}: expected a JSON string, got {type(value).__name__}")
            prompts.append(value)
    return prompts


def evaluate(args) -> int:
    import json
    import math

    from aunet.inference.evaluate import evaluate_model

    report = evaluate_model(args.model, args.data, batch_size=args.batch_size, max_batches=args.max_batches,
                            allow_shard_mismatch=args.allow_shard_mismatch, device=args.device, dtype=args.dtype)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    empty = [item for item, r in report["sources"].items() if r["bytes"] == 0]
    for item in empty:
        print(f"aunet eval: error: {item}: nothing to score (0 bytes: an empty input, or every document rejected)",
              file=sys.stderr)
    return 0 if not empty and all(math.isfinite(r["bpb"]) for r in report["sources"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
