"""`aunet-segment`: corpora in, Arrow shards of bytes + level masks out (SPEC section 3).

    aunet-segment INPUT... --out DIR (--strategy KEY=PARAM ... | --config CFG.yaml) [options]
    aunet-segment verify DIR [--deep]
    aunet-segment inspect DIR|SHARD [--limit N]
    aunet-segment merge DIR

Exit status: 0 when every document was written; 3 when the run finished but rejected some
documents (`--on-error skip`); 1 on an error (including the first bad document under
`--on-error fail`); 2 for bad command-line arguments.
"""

from __future__ import annotations

import argparse
import glob
import os
import queue
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

import yaml

from aunet import __version__
from aunet.segment_job import FileResult, JobOptions, RejectedInput, load_done, process_file
from aunet.segment_readers import detect_format
from aunet.segmenter import Segmenter
from aunet.shards import FORMAT, MANIFEST, Manifest

EXIT_REJECTED = 3


class UsageError(Exception):
    pass


def parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
    number = text.rstrip("KMGBkmgb")
    unit = text[len(number):].upper()
    try:
        value = int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 64MB, 1G, 500000)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


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
    p.add_argument("--workers", type=int, default=1, help="processes, each segmenting whole input files (default 1)")
    p.add_argument("--threads", type=int, help="segmentation threads per worker (default: CPUs / workers)")
    p.add_argument("--shard-size", type=parse_size, default=parse_size("256MB"), help="target text bytes per shard (default 256MB)")
    p.add_argument("--compression", choices=["none", "zstd"], default="none", help="shard compression; 'none' shards are memory-mappable without a copy")
    p.add_argument("--rank", type=int, default=0, help="this machine's rank among --world-size (inputs are split by index)")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="stop at the first bad document, or record it in rejects/ and go on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def strategy_from_args(args) -> dict[str, str]:
    if bool(args.strategy) == bool(args.config):
        raise UsageError("give either --strategy KEY=PARAM (one or more) or --config CFG.yaml")
    if args.strategy:
        strategy = {}
        for item in args.strategy:
            key, sep, param = item.partition("=")
            if not sep or not key:
                raise UsageError(f"--strategy {item!r}: expected KEY=PARAM, e.g. word1=1@1")
            strategy[key] = param
        return strategy
    try:
        cfg = yaml.safe_load(args.config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"--config {args.config}: cannot read: {e}") from e
    strategy = ((cfg or {}).get("data") or {}).get("regex", {}).get("strategy") if isinstance(cfg, dict) else None
    if not isinstance(strategy, dict) or not strategy:
        raise UsageError(f"--config {args.config}: no mapping at data.regex.strategy")
    return {str(k): str(v) for k, v in strategy.items()}


def expand_inputs(patterns: list[str], out: Path) -> list[Path]:
    """Sorted input files; the output directory is never an input (shards, manifests and
    rejects files of an earlier run would otherwise be read back)."""
    out_dir = out.resolve()
    found: dict[str, Path] = {}
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            # Hidden files and folders (.progress/ of an earlier run, .git/) are not corpus.
            matches = [p for p in path.rglob("*") if p.is_file() and detect_format(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not matches:
                raise UsageError(f"{pattern}: directory holds no JSONL/Parquet/Arrow files")
        elif path.exists():
            if detect_format(path) is None:
                raise UsageError(f"{pattern}: unsupported input format (expected .jsonl[.gz|.zst], .parquet or .arrow)")
            matches = [path]
        else:
            matches = [Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file() and detect_format(Path(m))]
            if not matches:
                raise UsageError(f"{pattern}: no such file, and no input files match it as a pattern")
        for m in matches:
            if out_dir not in m.resolve().parents:
                found.setdefault(os.path.normpath(m), m)
    return [found[k] for k in sorted(found)]


class Progress:
    """A tqdm bar over input bytes (so the ETA is known), with documents/s and text MB/s."""

    def __init__(self, total: int, enabled: bool):
        import shutil

        from tqdm import tqdm

        # A terminal that reports no size (a bare pty) makes tqdm hide the bar (zero rows);
        # shutil falls back to 80x24 there.
        size = shutil.get_terminal_size()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="segment", disable=not enabled,
                        smoothing=0.1, ncols=size.columns, nrows=size.lines)
        self.docs = self.text = 0
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, docs: int, text_bytes: int, input_bytes: int) -> None:
        with self.lock:
            self.docs += docs
            self.text += text_bytes
            elapsed = max(time.monotonic() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.docs / elapsed:,.0f} doc/s, text {self.text / elapsed / 1e6:,.1f} MB/s", refresh=False)
            self.bar.update(input_bytes)

    def close(self) -> None:
        self.bar.close()


_QUEUE = None


def _init_worker(progress_queue) -> None:
    global _QUEUE
    _QUEUE = progress_queue


def _worker(out: Path, index: int, source: Path, name: str, opts: JobOptions) -> FileResult:
    return process_file(out, index, source, name, opts, lambda d, t, i: _QUEUE.put((d, t, i)))


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        strategy = strategy_from_args(args)
        Segmenter(strategy)  # a bad strategy fails now, with its message
        if args.world_size < 1 or not 0 <= args.rank < args.world_size:
            raise UsageError(f"--rank {args.rank} must be in [0, --world-size {args.world_size})")
        if args.workers < 1 or (args.threads is not None and args.threads < 1):
            raise UsageError("--workers and --threads must be >= 1")
        files = expand_inputs(args.inputs, args.out)
    except (UsageError, ValueError, TypeError) as e:
        parser.error(str(e))
    cpus = len(os.sched_getaffinity(0))
    opts = JobOptions(
        strategy=strategy,
        text_field=args.text_field,
        extra_fields=tuple(f for f in args.keep_fields.split(",") if f),
        compression=args.compression,
        shard_bytes=args.shard_size,
        threads=args.threads or max(1, cpus // args.workers),
        on_error=args.on_error,
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    mine = [(k, f) for k, f in enumerate(files) if k % args.world_size == args.rank]
    results: dict[int, FileResult] = {}
    pending = []
    for k, f in mine:
        done = load_done(out, k, f, opts)
        if done is not None:
            results[k] = done
        else:
            pending.append((k, f))
    started = time.monotonic()
    progress = Progress(sum(f.stat().st_size for _, f in pending), enabled=not args.no_progress and sys.stderr.isatty())
    try:
        if args.workers == 1 or len(pending) <= 1:
            for k, f in pending:
                results[k] = process_file(out, k, f, str(f), opts, progress)
        else:
            results.update(_run_parallel(out, pending, opts, args.workers, progress))
    except RejectedInput as e:
        progress.close()
        print(f"aunet-segment: error: {e}\n(rerun with --on-error skip to record bad documents in {out}/rejects/ and go on)", file=sys.stderr)
        return 1
    progress.close()
    elapsed = time.monotonic() - started

    ordered = [results[k] for k, _ in mine]
    manifest = Manifest(
        format=FORMAT,
        version=__version__,
        strategy=strategy,
        compression=args.compression,
        text_field=args.text_field,
        extra_fields=list(opts.extra_fields),
        world_size=args.world_size,
        ranks=[args.rank],
        inputs=[{"index": r.index, "path": r.source, "size": r.input_size, "read": r.read, "written": r.written, "rejected": r.rejected_total} for r in ordered],
        shards=[s for r in ordered for s in r.shards],
        documents_read=sum(r.read for r in ordered),
        documents_written=sum(r.written for r in ordered),
        documents_rejected=sum(r.rejected_total for r in ordered),
        rejected_by_reason=dict(sum((Counter(r.rejected) for r in ordered), Counter())),
    )
    name = MANIFEST if args.world_size == 1 else f"manifest.rank{args.rank}-of{args.world_size}.json"
    manifest.write(out, name)
    print_summary(manifest, ordered, len(pending), elapsed, out / name)
    return EXIT_REJECTED if manifest.documents_rejected else 0


def _run_parallel(out: Path, pending, opts: JobOptions, workers: int, progress: Progress) -> dict[int, FileResult]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no state inherited from a parent that may hold threads
    progress_queue = ctx.Queue()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set() or not progress_queue.empty():
            try:
                progress(*progress_queue.get(timeout=0.1))
            except queue.Empty:
                continue

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    results = {}
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)) as pool:
            futures = {pool.submit(_worker, out, k, f, str(f), opts): k for k, f in pending}
            done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in not_done:
                fut.cancel()
            for fut in done:
                results[futures[fut]] = fut.result()  # re-raises RejectedInput
    finally:
        stop.set()
        pumper.join()
    return results


def print_summary(m: Manifest, results: list[FileResult], processed: int, elapsed: float, manifest_path: Path) -> None:
    text = sum(r.text_bytes for r in results)
    print(f"files: {len(results)} ({processed} processed now, {len(results) - processed} already done)")
    print(f"documents: read {m.documents_read:,}, written {m.documents_written:,}, rejected {m.documents_rejected:,}")
    for reason, n in sorted(m.rejected_by_reason.items(), key=lambda kv: -kv[1]):
        print(f"  rejected {n:,}: {reason}")
    print(f"text bytes written: {text:,} in {len(m.shards)} shards")
    print(f"time: {elapsed:.2f} s" + (f", {text / elapsed / 1e6:.1f} MB/s" if elapsed > 0 and processed else ""))
    print(f"manifest: {manifest_path}")


def main(argv: list[str] | None = None) -> int:
    from aunet.segment_tools import COMMANDS

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
