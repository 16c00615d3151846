"""Input formats, keyed by file suffix: each format module registers one `InputFormat`, and
`read_batches` reads any file by the format its name gives.

A name is `<stem><format suffix>[<codec suffix>]`: `a.jsonl`, `a.jsonl.zst`, `b.parquet`. A
codec suffix (see `compression`) is accepted only before a `streamed` format, one read as a
byte stream; Parquet and Arrow files are memory-mapped and compress inside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aunet.segment.readers.batch import DEFAULT_MAX_DOCUMENT_BYTES, Batch, Reject
from aunet.segment.readers.compression import CODECS, Codec, codec_of


@dataclass(frozen=True)
class InputFile:
    """One input file as a reader gets it, with what to take from it."""

    path: Path
    name: str  # the file as errors and rejects name it
    codec: Codec | None  # set only for a streamed format
    kind: str  # the format as messages name it: "jsonl", "jsonl.zst", "parquet"
    text_field: str | None  # None: "text", else "content"
    extra_fields: list[str]
    batch_bytes: int  # text bytes per batch, about (batches are a function of the contents)
    max_document_bytes: int  # a longer document is rejected
    ahead: int  # batches each background stage may run ahead; 0: no threads

    @property
    def wanted(self) -> str:
        """The text field as a rejection names it."""
        return f"{self.text_field!r}" if self.text_field else "'text' or 'content'"


@dataclass(frozen=True)
class InputFormat:
    name: str  # "jsonl"
    label: str  # "JSONL", for messages
    suffixes: tuple[str, ...]  # lower case, the first one the usual spelling
    read: Callable[[InputFile], Iterator[Batch]]
    streamed: bool = False  # read as a byte stream: compressed files of it are read too


_FORMATS: list[InputFormat] = []


def register(fmt: InputFormat) -> InputFormat:
    taken = {s for f in _FORMATS for s in f.suffixes} & set(fmt.suffixes)
    if taken or any(f.name == fmt.name for f in _FORMATS):
        raise ValueError(f"input format {fmt.name!r}: name or suffixes {sorted(taken)} already registered")
    _FORMATS.append(fmt)
    return fmt


def resolve(path: Path) -> tuple[InputFormat, Codec | None] | None:
    """The format of `path` and its codec (None when not compressed), from its name; None for
    a name no format claims."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    last = suffixes[-1] if suffixes else ""
    before = suffixes[-2] if len(suffixes) == 2 else ""
    for fmt in _FORMATS:
        if last in fmt.suffixes:
            return fmt, None
    codec = codec_of(last)
    if codec is not None:
        for fmt in _FORMATS:
            if fmt.streamed and before in fmt.suffixes:
                return fmt, codec
    return None


def _kind(fmt: InputFormat, codec: Codec | None) -> str:
    return fmt.name if codec is None else f"{fmt.name}.{codec.name}"


def detect_format(path: Path) -> str | None:
    """`"jsonl"`, `"jsonl.gz"`, `"parquet"`...: the format `path`'s name gives, or None."""
    found = resolve(path)
    return _kind(*found) if found else None


def format_names() -> list[str]:
    """Every readable kind: each format, and each streamed one with each codec."""
    return [_kind(f, c) for f in _FORMATS for c in (None, *(CODECS if f.streamed else ()))]


def expected_suffixes() -> str:
    """`.jsonl[.gz|.zst], .parquet or .arrow`: the names accepted, for messages."""
    codecs = "[" + "|".join(c.suffixes[0] for c in CODECS) + "]"
    spelled = [f.suffixes[0] + (codecs if f.streamed else "") for f in _FORMATS]
    return ", ".join(spelled[:-1]) + " or " + spelled[-1] if len(spelled) > 1 else "".join(spelled)


def format_labels() -> str:
    """`JSONL/Parquet/Arrow`, for messages."""
    return "/".join(f.label for f in _FORMATS)


def read_batches(path: Path, name: str, text_field: str | None, extra_fields: list[str], batch_bytes: int = 8 << 20,
                 max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES, ahead: int = 0) -> Iterator[Batch]:
    """Documents of `path` in batches of about `batch_bytes` (a function of the file's contents
    only); one longer than `max_document_bytes` is rejected (see `DEFAULT_MAX_DOCUMENT_BYTES`).
    With `ahead` > 0, reading runs in background threads up to `ahead` batches ahead."""
    found = resolve(path)
    try:
        if found is None:
            raise ValueError(f"{name}: unsupported input format (expected one of {', '.join(format_names())})")
        fmt, codec = found
        yield from fmt.read(InputFile(path, name, codec, _kind(fmt, codec), text_field, list(extra_fields), batch_bytes,
                                      max_document_bytes, ahead))
    except OSError as e:
        yield Batch.rejected(Reject(name, "file", f"unreadable: {e.strerror or e}", retry=True))
