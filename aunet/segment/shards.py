"""The shard format of SPEC section 3: Arrow IPC files of bytes + level masks, and a manifest.

A shard is an Arrow IPC *file* (random-access format, so it can be memory-mapped and read
without a copy when uncompressed) with the columns

- ``text``: large_binary, the document's UTF-8 bytes (no BOS/EOS),
- ``level_mask``: large_binary, one uint8 level per byte of ``text``,
- ``row``: int64, the document's line (JSONL, 1-based) or row (Parquet/Arrow, 0-based) in
  its source file,
- any carried-through input fields (large_string).

Schema metadata holds the strategy list, the tool version and the source file. The manifest
(``manifest.json``, written last and atomically) lists every shard with its document and byte
counts and a checksum. Shard paths in a manifest are relative and must stay inside its
directory (SPEC section 8): `Manifest.load` refuses any other.

Checksums are written as ``"<algorithm>:<hex digest>"``: ``xxh3_128`` (XXH3-128, the `xxhash`
package) for shards written now. It detects damage (a flipped bit, a truncated or swapped file),
not tampering: it is no cryptographic hash, and anyone who can rewrite a shard can rewrite the
manifest beside it anyway. Manifests and progress markers written before it carry
``"sha256": "<hex>"``; `ShardInfo.from_dict` reads those as ``"sha256:<hex>"``, verified with
SHA-256. ``FORMAT`` stays ``aunet-shards/1``: the shard files are unchanged, nothing compares
``FORMAT`` on load (only `merge` compares rank manifests with each other), and each checksum
names its own algorithm, so old and new manifests (and a resumed run mixing both) stay readable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import xxhash

from aunet.io import write_atomic
from aunet.segment.errors import ManifestError, MissingManifest
from aunet.segment.layout import MANIFEST, RANK_MANIFEST_GLOB
from aunet.version import __version__

FORMAT = "aunet-shards/1"
META_STRATEGY = b"aunet.strategy"
META_VERSION = b"aunet.version"
META_SOURCE = b"aunet.source"
META_FORMAT = b"aunet.format"


def shard_schema(strategy: dict[str, str] | list, source: str, extra_fields: list[str]) -> pa.Schema:
    fields = [
        pa.field("text", pa.large_binary(), nullable=False),
        pa.field("level_mask", pa.large_binary(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
    ]
    fields += [pa.field(name, pa.large_string()) for name in extra_fields]
    return pa.schema(
        fields,
        metadata={
            META_FORMAT: FORMAT.encode(),
            META_STRATEGY: json.dumps(strategy).encode(),
            META_VERSION: __version__.encode(),
            META_SOURCE: os.fsencode(source),  # the name as the filesystem has it, UTF-8 or not
        },
    )


def confined(directory: str | Path, path: object) -> bool:
    """Whether `path` (from a manifest or marker) names a file inside `directory`: relative, no
    `..`, and inside it still once symlinks are resolved."""
    if not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts:
        return False
    root = Path(directory).resolve()
    return root in (root / path).resolve().parents


def input_list_digest(names: list[str]) -> dict:
    """What a rank manifest records of the whole input list: input k of every rank must be the
    same file, or `merge` would combine shards of a different corpus split. SHA-256 of the
    names (a few bytes, not the shards): kept so, as `merge` compares it with older ranks'."""
    return {"files": len(names), "sha256": hashlib.sha256(json.dumps(names).encode()).hexdigest()}


#: The checksum algorithm of shards written now (see the module docstring for why XXH3-128).
CHECKSUM_ALGORITHM = "xxh3_128"
# The one place that knows the algorithms: name in the checksum prefix -> a new hasher.
# sha256 only for directories written before XXH3-128 replaced it.
_HASHERS = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}


def new_hasher(algorithm: str = CHECKSUM_ALGORITHM, where: str | Path = "?"):
    """A fresh hasher (`update`, `hexdigest`) for `algorithm`; `ManifestError` naming `where`
    (the shard or manifest) for an algorithm this version does not know."""
    try:
        return _HASHERS[algorithm]()
    except KeyError:
        raise ManifestError(f"{where}: unknown checksum algorithm {algorithm!r} (known: {', '.join(_HASHERS)}); "
                            "written by a newer aunet?", file=str(where)) from None


def file_checksum(path: Path, algorithm: str = CHECKSUM_ALGORITHM, chunk: int = 1 << 22) -> str:
    """The checksum of a file, as a manifest records it: ``"<algorithm>:<hex digest>"``."""
    h = new_hasher(algorithm, path)
    # One reused buffer: XXH3 hashes faster than fresh 4 MiB `read`s are allocated (measured:
    # about 1.4x on a 512 MiB file in the page cache).
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return f"{algorithm}:{h.hexdigest()}"


def split_checksum(checksum: str, where: str | Path = "?") -> tuple[str, str]:
    """(algorithm, hex digest) of a recorded checksum; `ManifestError` naming `where` for one
    without a known ``algorithm:`` prefix."""
    algorithm, sep, digest = str(checksum).partition(":")
    if not sep or not digest:
        raise ManifestError(f"{where}: checksum {checksum!r} has no 'algorithm:' prefix", file=str(where))
    new_hasher(algorithm, where)  # raises for an unknown one
    return algorithm, digest


def checksum_matches(path: Path, checksum: str) -> bool:
    """Whether the file at `path` has the recorded `checksum`, computed with the algorithm that
    it names (SHA-256 for directories written before XXH3-128)."""
    algorithm, _ = split_checksum(checksum, path)
    return file_checksum(path, algorithm) == checksum


@dataclass
class ShardInfo:
    path: str  # relative to the output directory
    documents: int
    text_bytes: int
    file_bytes: int
    checksum: str
    """``"xxh3_128:<32 hex digits>"`` (``"sha256:<hex>"`` in directories written before)."""
    batches: list[list[int]] | None = None
    """[rows, text bytes] of each record batch, in order: lets a reader plan which batches to
    read (the training loader's rank split) without opening the file. None in manifests
    written before it existed."""

    @classmethod
    def from_dict(cls, raw: dict) -> "ShardInfo":
        """A shard entry of a manifest or progress marker, old or new: one written before
        XXH3-128 has ``"sha256": "<hex>"``, read as the checksum ``"sha256:<hex>"``."""
        raw = dict(raw)
        if "sha256" in raw and "checksum" not in raw:
            raw["checksum"] = f"sha256:{raw.pop('sha256')}"
        return cls(**raw)


@dataclass
class RunReport:
    """What one `segment_corpus` call did (not saved in the manifest)."""

    files_processed: int
    """Input files segmented by this call (the others were already done by an earlier run)."""
    files_done_before: int
    seconds: float
    duplicate_inputs: int = 0
    """Inputs dropped because they name a file already listed (by resolved path)."""
    retry_later: int = 0
    """Files that could not be read (their documents counted as rejected): not marked done, so
    the next run reads them again."""


@dataclass
class Manifest:
    """The typed view of `manifest.json` that verify, the loader and the trainer read."""

    format: str
    version: str
    strategy: dict[str, str] | list  # as given to Segmenter: the config mapping or a list of pairs
    compression: str
    text_field: str | None
    extra_fields: list[str]
    world_size: int
    ranks: list[int]
    inputs: list[dict]
    shards: list[ShardInfo] = field(default_factory=list)
    documents_read: int = 0
    documents_written: int = 0
    documents_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    input_list: dict | None = None
    """`input_list_digest` of every rank's input list (not only this rank's `inputs`); None in
    manifests written before it existed."""
    run: RunReport | None = field(default=None, compare=False)
    """Set on the manifest `segment_corpus` returns; None when loaded from disk."""

    @classmethod
    def build(cls, *, strategy, compression: str, text_field: str | None, extra_fields: list[str], world_size: int,
              ranks: list[int], inputs: Iterable[dict], shards: Iterable[ShardInfo],
              rejected_by_reason: Iterable[Mapping[str, int]], input_list: dict | None = None,
              version: str = __version__) -> "Manifest":
        """The one way a manifest is made (a run's, a datatrove task's, a merge's). `inputs` are
        entries {"index", "path", "size", "read", "written", "rejected"}: the document counts
        are their sums, so a manifest's totals always agree with its inputs; `rejected_by_reason`
        holds one count per reason for each part (input or rank), summed here. Inputs are listed
        by index and shards by path, which is input order (see `layout.shard_name`)."""
        inputs = sorted(inputs, key=lambda i: i["index"])
        return cls(
            format=FORMAT,
            version=version,
            strategy=strategy,
            compression=compression,
            text_field=text_field,
            extra_fields=list(extra_fields),
            world_size=world_size,
            ranks=list(ranks),
            inputs=inputs,
            shards=sorted(shards, key=lambda s: s.path),
            documents_read=sum(i["read"] for i in inputs),
            documents_written=sum(i["written"] for i in inputs),
            documents_rejected=sum(i["rejected"] for i in inputs),
            rejected_by_reason=dict(sum((Counter(r) for r in rejected_by_reason), Counter())),
            input_list=input_list,
        )

    @property
    def text_bytes(self) -> int:
        return sum(s.text_bytes for s in self.shards)

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw.pop("run")
        return json.dumps(raw, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> "Manifest":
        raw = json.loads(data)
        raw["shards"] = [ShardInfo.from_dict(s) for s in raw["shards"]]
        return cls(**raw)

    @classmethod
    def load(cls, directory: str | Path, name: str = MANIFEST) -> "Manifest":
        """The manifest of a shard directory; `MissingManifest` or `ManifestError` otherwise."""
        path = Path(directory) / name
        if not path.exists():
            ranks = sorted(Path(directory).glob(RANK_MANIFEST_GLOB))
            hint = f" (found {len(ranks)} rank manifests: run `aunet-segment merge {directory}`)" if ranks and name == MANIFEST else ""
            raise MissingManifest(f"{path}: no manifest{hint}", file=str(path))
        try:
            manifest = cls.from_json(path.read_bytes())
        except (ValueError, TypeError, KeyError) as e:
            raise ManifestError(f"{path}: not a valid manifest: {e}", file=str(path)) from e
        for shard in manifest.shards:
            if not confined(directory, shard.path):
                raise ManifestError(f"{path}: shard path {shard.path!r} is outside the directory "
                                    "(it must be relative, without '..', and not a link out of it)", file=str(path))
            # A checksum this version cannot compute is refused here, naming the manifest, not
            # later as a mismatch that would read as damage.
            try:
                split_checksum(shard.checksum, path)
            except ManifestError as e:
                raise ManifestError(f"{e} (shard {shard.path})", file=str(path)) from None
        return manifest

    def write(self, directory: Path, name: str = MANIFEST) -> Path:
        path = directory / name
        write_atomic(path, self.to_json())
        return path


def open_shard(path: Path) -> pa.ipc.RecordBatchFileReader:
    """Open a shard memory-mapped: uncompressed columns are read without a copy."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r"))
