"""`segment_corpus`: corpora in, Arrow shards of bytes + level masks out (SPEC section 3).

The one entry point of preprocessing: the `aunet-segment` command, the trainer's raw-text
sources and `aunet eval` on text files all call it. Input file k (its index among all sorted
inputs, shared by every rank) is segmented by `aunet.segment.job` into its own shards, so a
run is resumable and its output a pure function of the inputs and the options; several worker
threads each take whole files.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aunet.segment.errors import InvalidRequest, ManifestError, MissingManifest, SegmentError
from aunet.segment.job import FileResult, JobOptions, load_done, process_file
from aunet.segment.readers import DEFAULT_MAX_DOCUMENT_BYTES, detect_format, expected_suffixes, format_labels
from aunet.segment.segmenter import Segmenter
from aunet.segment.layout import MANIFEST, input_glob, manifest_name
from aunet.segment.shards import Manifest, RunReport, input_list_digest

# Columns every shard has (SPEC section 3): kept input fields may not take these names.
SHARD_COLUMNS = ("text", "level_mask", "row")

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}


def parse_size(size: str | int) -> int:
    """Bytes in `size`: an int, or text such as ``64MB``, ``1G``, ``500000``.

    >>> parse_size("64MB")
    67108864
    """
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        text = str(size)
        number = text.rstrip("KMGBkmgb")
        try:
            value = int(float(number) * _UNITS[text[len(number):].upper()])
        except (ValueError, KeyError, OverflowError):  # OverflowError: inf
            raise InvalidRequest(f"invalid size {text!r} (examples: 64MB, 1G, 500000)") from None
    if value <= 0:
        raise InvalidRequest(f"size must be positive, got {size!r}")
    return value


def expand_inputs(patterns: Iterable[str | Path], out: Path) -> list[Path]:
    """Sorted input files of files, directories (searched recursively) and glob patterns. The
    output directory is never an input (shards, manifests and rejects files of an earlier run
    would otherwise be read back); hidden files and folders (.progress/, .git/) are not corpus.
    A file reached twice (relative and absolute spelling, a symlink, two overlapping patterns)
    is one input: see `expand_inputs_counted`."""
    return expand_inputs_counted(patterns, out)[0]


def expand_inputs_counted(patterns: Iterable[str | Path], out: Path) -> tuple[list[Path], int]:
    """(`expand_inputs`, how many mentions of a file already listed were dropped). Duplicates are
    found by resolved path; the spelling kept is the smallest normalised one, so the input
    list does not depend on the order of the patterns."""
    out_dir = Path(out).resolve()
    by_file: dict[Path, list[str]] = {}
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_dir():
            if path.resolve() == out_dir:
                raise InvalidRequest(f"{pattern}: this is the output directory (--out), not an input", file=pattern)
            matches = [p for p in path.rglob("*") if p.is_file() and detect_format(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not matches:
                raise InvalidRequest(f"{pattern}: directory holds no {format_labels()} files", file=pattern)
        elif path.exists():
            if detect_format(path) is None:
                raise InvalidRequest(f"{pattern}: unsupported input format (expected {expected_suffixes()})", file=pattern)
            matches = [path]
        else:
            matches = [Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file() and detect_format(Path(m))]
            if not matches:
                raise InvalidRequest(f"{pattern}: no such file, and no input files match it as a pattern", file=pattern)
        for m in matches:
            resolved = m.resolve()
            if out_dir not in resolved.parents:
                by_file.setdefault(resolved, []).append(os.path.normpath(m))
    if not by_file:
        raise InvalidRequest(f"no input files: every file given is inside the output directory {out}", file=str(out))
    kept = {min(names): Path(min(names)) for names in by_file.values()}
    duplicates = sum(len(names) - 1 for names in by_file.values())
    return [kept[k] for k in sorted(kept)], duplicates


class _Progress:
    """A tqdm bar over input bytes (so the ETA is known), with documents/s and text MB/s."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm  # about a quarter of a second to import: paid by a run, not by every `import aunet`

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


def _options(strategy, threads, workers, shard_size, compression, on_error, rank, world_size, text_field, keep_fields,
             max_document_bytes) -> JobOptions:
    """Checked options: every mistake in the call is an `InvalidRequest` before any work."""
    try:
        Segmenter(strategy)
    except (ValueError, TypeError) as e:
        raise InvalidRequest(f"strategy: {e}") from None
    if isinstance(strategy, Mapping):
        strategy = {str(k): v for k, v in strategy.items()}
    elif isinstance(strategy, Sequence):
        strategy = [list(pair) for pair in strategy]
    if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise InvalidRequest(f"rank {rank} must be in [0, world_size {world_size})")
    if not isinstance(workers, int) or workers < 1 or (threads is not None and (not isinstance(threads, int) or threads < 1)):
        raise InvalidRequest(f"workers ({workers!r}) and threads ({threads!r}) must be integers >= 1")
    if compression not in ("none", "zstd"):
        raise InvalidRequest(f"compression must be 'none' or 'zstd', got {compression!r}")
    if on_error not in ("fail", "skip"):
        raise InvalidRequest(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if text_field is not None and (not isinstance(text_field, str) or not text_field):
        raise InvalidRequest(f"text_field must be a non-empty string (the name of the input field), got {text_field!r}")
    if isinstance(keep_fields, str):
        keep_fields = [f for f in keep_fields.split(",") if f]
    keep_fields = list(keep_fields)
    reserved = sorted({f for f in keep_fields if f in SHARD_COLUMNS})
    if reserved:
        raise InvalidRequest(f"keep_fields: {', '.join(reserved)} would replace the shard column of that name "
                             f"(the shard columns are {', '.join(SHARD_COLUMNS)})")
    repeated = sorted({f for f in keep_fields if keep_fields.count(f) > 1})
    if repeated:
        raise InvalidRequest(f"keep_fields: {', '.join(repeated)} given more than once")
    cpus = len(os.sched_getaffinity(0))
    return JobOptions(strategy=strategy, text_field=text_field, extra_fields=tuple(keep_fields), compression=compression,
                      shard_bytes=parse_size(shard_size), threads=threads or max(1, cpus // workers), on_error=on_error,
                      max_document_bytes=parse_size(max_document_bytes))


def segment_corpus(
    inputs: str | Path | Iterable[str | Path],
    out: str | Path,
    strategy,
    *,
    workers: int = 1,
    threads: int | None = None,
    shard_size: str | int = "256MB",
    compression: str = "none",
    on_error: str = "fail",
    rank: int = 0,
    world_size: int = 1,
    text_field: str | None = None,
    keep_fields: Sequence[str] | str = (),
    max_document_bytes: str | int = DEFAULT_MAX_DOCUMENT_BYTES,
    progress: bool = False,
    repair: bool = False,
) -> Manifest:
    """Segment `inputs` (files, directories, glob patterns: JSONL / .gz / .zst, Parquet, Arrow)
    into shards under `out` and return the manifest written there.

    `strategy` is what `Segmenter` takes. `workers` threads each take whole files, with
    `threads` segmentation threads each (default: CPUs / workers). With `world_size` > 1 this
    call does the files k with k % world_size == rank and writes `manifest.rankR-ofW.json`;
    `aunet.segment.merge` combines them. A rerun skips files already done with the same
    options (its shards present with their recorded sizes; with `repair`, their checksums
    too), and retries files that could not be read. `on_error="fail"` raises `BadDocument` at the first bad document;
    ``"skip"`` records it under `out/rejects/` (the manifest counts it). A document longer than
    `max_document_bytes` (a JSONL line's raw bytes, a Parquet/Arrow text value) is such a bad
    document. Bad arguments raise `InvalidRequest`.

    >>> m = segment_corpus("corpus/*.jsonl.zst", "shards", {"word1": "1@1"})  # doctest: +SKIP
    >>> m.documents_written, len(m.shards)                                     # doctest: +SKIP
    """
    opts = _options(strategy, threads, workers, shard_size, compression, on_error, rank, world_size, text_field, keep_fields,
                    max_document_bytes)
    out = Path(out)
    files, duplicates = expand_inputs_counted([inputs] if isinstance(inputs, (str, Path)) else list(inputs), out)
    out.mkdir(parents=True, exist_ok=True)
    mine = [(k, f) for k, f in enumerate(files) if k % world_size == rank]
    listed = listed_shards(out, rank, world_size)
    results: dict[int, FileResult] = {}
    pending = []
    for k, f in mine:
        done = load_done(out, k, f, opts, repair=repair)
        if done is not None:
            results[k] = done
        else:
            pending.append((k, f))
    if threads is None and pending:
        # CPUs / workers by default; when fewer files than workers are left to do, a file gets
        # the threads of the workers that have none (threads never change the output).
        opts = dataclasses.replace(opts, threads=max(1, len(os.sched_getaffinity(0)) // min(workers, len(pending))))
    started = time.monotonic()
    bar = _Progress(sum(f.stat().st_size for _, f in pending), enabled=progress)
    try:
        if workers == 1 or len(pending) <= 1:
            for k, f in pending:
                results[k] = process_file(out, k, f, str(f), opts, bar, listed=listed)
        else:
            results.update(_run_parallel(out, pending, opts, workers, bar, listed))
    finally:
        bar.close()

    ordered = [results[k] for k, _ in mine]
    manifest = Manifest.build(
        strategy=opts.strategy, compression=compression, text_field=text_field, extra_fields=list(opts.extra_fields),
        world_size=world_size, ranks=[rank],
        inputs=[{"index": r.index, "path": r.source, "size": r.input_size, "read": r.read, "written": r.written, "rejected": r.rejected_total} for r in ordered],
        shards=[s for r in ordered for s in r.shards], rejected_by_reason=[r.rejected for r in ordered],
        input_list=input_list_digest([str(f) for f in files]),
    )
    _refuse_emptying(out, manifest_name(rank, world_size), manifest)
    manifest.write(out, manifest_name(rank, world_size))
    # Only now that no manifest of this run lists them: the shards the redone inputs replaced.
    _remove_unlisted(out, [k for k, _ in mine], listed_shards(out, rank, world_size))
    manifest.run = RunReport(files_processed=len(pending), files_done_before=len(mine) - len(pending),
                             seconds=time.monotonic() - started, duplicate_inputs=duplicates,
                             retry_later=sum(1 for k, _ in pending if not results[k].complete))
    return manifest


def _refuse_emptying(out: Path, name: str, new: Manifest) -> None:
    """A manifest that lists shards is never replaced by one that lists none: such a run read
    nothing usable, and overwriting would hide the earlier output from every reader."""
    if new.shards:
        return
    try:
        old = Manifest.load(out, name)
    except (MissingManifest, ManifestError):
        return
    if old.shards:
        raise SegmentError(f"{out / name}: lists {len(old.shards)} shards, and this run wrote none (every document rejected, "
                           f"or inputs without documents); the manifest is left as it was", file=str(out / name))


def listed_shards(out: Path, rank: int, world_size: int) -> frozenset[str]:
    """The shard names that a manifest of `out` lists now and a reader may open: this rank's
    manifest and, in a multi-rank run, the merged one (until `merge` runs again). A manifest
    that cannot be read lists nothing."""
    names = set()
    for name in {manifest_name(rank, world_size), MANIFEST}:
        try:
            names.update(Path(s.path).name for s in Manifest.load(out, name).shards)
        except (MissingManifest, ManifestError):
            pass
    return frozenset(names)


def _remove_unlisted(out: Path, indices: list[int], listed: frozenset[str]) -> None:
    for k in indices:
        for path in out.glob(input_glob(k)):
            if path.name not in listed and not path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)


def _run_parallel(out: Path, pending, opts: JobOptions, workers: int, progress: _Progress,
                  listed: frozenset[str] = frozenset()) -> dict[int, FileResult]:
    """Files to `workers` workers, threads of this process: this thread is one, `workers - 1`
    threads are the others. Each takes the next file in order when it is free; after an error
    no new file is started, the running ones finish, and the error of the lowest file index is
    raised. An interrupt here (Ctrl-C) stops the other workers at their next batch (their files
    get no marker: a rerun redoes them) and is raised as such.

    Threads, not processes: every heavy stage of a file (zstd, the JSONL scanner, Parquet
    decoding, segmentation, XXH3, writes) runs with the GIL released, and two worker threads
    measured as fast as two worker processes (docs/benchmarks.md), without a spawned interpreter
    to start and import (about half a second per run). More processes on one machine: run
    several ranks (`--rank/--world-size`)."""
    todo = collections.deque(pending)
    lock = threading.Lock()
    results: dict[int, FileResult] = {}
    errors: list[tuple[int, BaseException]] = []
    cancel = threading.Event()

    def take():
        with lock:
            return todo.popleft() if todo and not errors and not cancel.is_set() else None

    def work() -> None:
        while (item := take()) is not None:
            k, f = item
            try:
                results[k] = process_file(out, k, f, str(f), opts, progress, cancel, listed)
            except Exception as e:  # noqa: BLE001 - raised below, after the other workers stop
                with lock:
                    errors.append((k, e))

    helpers = [threading.Thread(target=work, name=f"aunet-worker-{i + 1}", daemon=True) for i in range(workers - 1)]
    for t in helpers:
        t.start()
    try:
        work()
    except BaseException:  # KeyboardInterrupt, SystemExit: this run stops now, the helpers too
        cancel.set()
        raise
    finally:
        for t in helpers:
            t.join()
    if errors:
        raise min(errors, key=lambda ke: ke[0])[1]
    return results
