"""`aunet-segment`: the command line of `aunet.segment_corpus` and of the shard tools.

    aunet-segment INPUT... --out DIR (--strategy KEY=PARAM ... | --config CFG.yaml) [options]
    aunet-segment verify DIR [--deep]
    aunet-segment inspect DIR|SHARD [--limit N]
    aunet-segment merge DIR

Argument parsing and exit codes only; the work is in `aunet.segment`. Exit status: 0 when every
document was written; 3 when the run finished but rejected some documents (`--on-error skip`);
1 on an error (including the first bad document under `--on-error fail`); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from aunet.segment.corpus import parse_size, segment_corpus
from aunet.segment.errors import BadDocument, InvalidRequest, ManifestError, SegmentError
from aunet.segment.layout import MANIFEST, REJECTS_DIR, manifest_name
from aunet.segment.readers import DEFAULT_MAX_DOCUMENT_BYTES
from aunet.segment.shards import Manifest
from aunet.segment.tools import inspect, merge, verify

EXIT_REJECTED = 3


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except InvalidRequest as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aunet-segment",
        description="Segment corpora (JSONL, JSONL.gz, JSONL.zst, Parquet, Arrow) into Arrow shards of bytes + level masks. "
        "Other commands: verify DIR, inspect DIR|SHARD, merge DIR.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--strategy", action="append", metavar="KEY=PARAM", help="a strategy, e.g. word1=1@1 (repeat, in stage order)")
    p.add_argument("--config", type=Path, help="training config: use its data.regex.strategy")
    p.add_argument("--text-field", help="field holding the text (default: 'text', else 'content')")
    p.add_argument("--keep-fields", default="", metavar="A,B", help="input fields carried into the shards as strings (ids, urls)")
    p.add_argument("--workers", type=int, default=1, help="worker threads, each segmenting whole input files (default 1)")
    p.add_argument("--threads", type=int, help="segmentation threads per worker (default: CPUs / workers)")
    p.add_argument("--shard-size", type=_size, default=parse_size("256MB"), help="target text bytes per shard (default 256MB)")
    p.add_argument("--compression", choices=["none", "zstd"], default="none", help="shard compression; 'none' shards are memory-mappable without a copy")
    p.add_argument("--rank", type=int, default=0, help="this machine's rank among --world-size (inputs are split by index)")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="stop at the first bad document, or record it in rejects/ and go on")
    p.add_argument("--max-document-bytes", type=_size, default=DEFAULT_MAX_DOCUMENT_BYTES, metavar="SIZE",
                   help="a longer document (JSONL line, Parquet/Arrow text value) is a bad document (default 64MB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--repair", action="store_true",
                   help="on a rerun, also check the checksum (XXH3-128) of every finished shard (reads them all) and redo the files "
                        "whose shards differ; without it a rerun checks that each shard exists with its recorded size")
    return p


def strategy_from_args(args) -> dict[str, str]:
    if bool(args.strategy) == bool(args.config):
        raise InvalidRequest("give either --strategy KEY=PARAM (one or more) or --config CFG.yaml")
    if args.strategy:
        strategy: dict[str, str] = {}
        for item in args.strategy:
            key, sep, param = item.partition("=")
            if not sep or not key:
                raise InvalidRequest(f"--strategy {item!r}: expected KEY=PARAM, e.g. word1=1@1")
            if key in strategy:
                # A mapping keeps one value per key: the second stage would silently replace the
                # first. Stages of one kind take distinct keys (word1=1@1 --strategy word2=2@1).
                raise InvalidRequest(f"--strategy {item!r}: key {key!r} given twice (--strategy {key}={strategy[key]}); "
                                     f"give each stage its own key, e.g. {key}1=... {key}2=...")
            strategy[key] = param
        return strategy
    try:
        cfg = yaml.safe_load(args.config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InvalidRequest(f"--config {args.config}: cannot read: {e}", file=str(args.config)) from e
    strategy = ((cfg or {}).get("data") or {}).get("regex", {}).get("strategy") if isinstance(cfg, dict) else None
    if not isinstance(strategy, dict) or not strategy:
        raise InvalidRequest(f"--config {args.config}: no mapping at data.regex.strategy", file=str(args.config))
    return {str(k): str(v) for k, v in strategy.items()}


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = segment_corpus(
            args.inputs, args.out, strategy_from_args(args), workers=args.workers, threads=args.threads,
            shard_size=args.shard_size, compression=args.compression, on_error=args.on_error, rank=args.rank,
            world_size=args.world_size, text_field=args.text_field, keep_fields=args.keep_fields,
            max_document_bytes=args.max_document_bytes, progress=not args.no_progress and sys.stderr.isatty(),
            repair=args.repair,
        )
    except InvalidRequest as e:
        parser.error(str(e))
    except BadDocument as e:
        print(f"aunet-segment: error: {e}\n(rerun with --on-error skip to record bad documents in {args.out}/{REJECTS_DIR}/ and go on)", file=sys.stderr)
        return 1
    except SegmentError as e:
        print(f"aunet-segment: error: {e}", file=sys.stderr)
        return 1
    print_summary(manifest, args.out)
    return EXIT_REJECTED if manifest.documents_rejected else 0


def print_summary(m: Manifest, out: Path) -> None:
    run = m.run
    duplicates = f"; {run.duplicate_inputs} repeated inputs (a file already listed, by another path) skipped" if run.duplicate_inputs else ""
    print(f"files: {len(m.inputs)} ({run.files_processed} processed now, {run.files_done_before} already done{duplicates})")
    if run.retry_later:
        print(f"  {run.retry_later} files could not be read (see rejected): not marked done, the next run reads them again")
    print(f"documents: read {m.documents_read:,}, written {m.documents_written:,}, rejected {m.documents_rejected:,}")
    for reason, n in sorted(m.rejected_by_reason.items(), key=lambda kv: -kv[1]):
        print(f"  rejected {n:,}: {reason}")
    print(f"text bytes written: {m.text_bytes:,} in {len(m.shards)} shards")
    rate = f", {m.text_bytes / run.seconds / 1e6:.1f} MB/s" if run.seconds > 0 and run.files_processed else ""
    print(f"time: {run.seconds:.2f} s{rate}")
    print(f"manifest: {out / manifest_name(m.ranks[0], m.world_size)}")


def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aunet-segment verify", description="Check a shard directory against its manifest.")
    p.add_argument("dir", type=Path)
    p.add_argument("--deep", action="store_true", help="also recompute every mask with the manifest's strategy")
    return p


def verify_main(argv: list[str]) -> int:
    args = verify_parser().parse_args(argv)
    try:
        problems = verify(args.dir, args.deep)
    except ManifestError as e:
        print(f"aunet-segment verify: {e}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir}")
        return 1
    manifest = Manifest.load(args.dir)
    docs = sum(s.documents for s in manifest.shards)
    print(f"OK {args.dir}: {len(manifest.shards)} shards, {docs:,} documents, {manifest.text_bytes:,} text bytes" + (" (masks recomputed)" if args.deep else ""))
    return 0


def inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aunet-segment inspect", description="Print documents with their segment boundaries per stage.")
    p.add_argument("path", type=Path, help="a shard directory or one .arrow shard")
    p.add_argument("--limit", type=int, default=3, help="documents to print (default 3)")
    p.add_argument("--max-bytes", type=int, default=400, help="bytes of each document to print (default 400)")
    return p


def inspect_main(argv: list[str]) -> int:
    args = inspect_parser().parse_args(argv)
    try:
        for line in inspect(args.path, args.limit, args.max_bytes):
            print(line)
    except ManifestError as e:
        print(f"aunet-segment inspect: {e}", file=sys.stderr)
        return 1
    return 0


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aunet-segment merge", description="Combine the rank manifests of a --world-size run into manifest.json.")
    p.add_argument("dir", type=Path)
    p.add_argument("--world-size", type=int, default=None,
                   help="the run's number of ranks (default: that of the newest rank manifest); "
                        "rank manifests of another world size are removed")
    return p


def merge_main(argv: list[str]) -> int:
    args = merge_parser().parse_args(argv)
    try:
        merged = merge(args.dir, args.world_size)
    except ManifestError as e:
        print(f"aunet-segment merge: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(merged.ranks)} rank manifests into {args.dir / MANIFEST}: {len(merged.shards)} shards, {merged.documents_written:,} documents")
    return 0


COMMANDS = {"verify": verify_main, "inspect": inspect_main, "merge": merge_main}
#: The sub-commands' parsers, by name (tools/gen_docs.py documents them from these).
SUBCOMMAND_PARSERS = {"verify": verify_parser, "inspect": inspect_parser, "merge": merge_parser}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
