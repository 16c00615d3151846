"""The input format registry: formats by suffix, codecs apart from formats, and a new format
taken by `segment_corpus` as soon as it is registered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aunet.segment import segment_corpus
from aunet.segment.readers import Batch, InputFormat, detect_format, expected_suffixes, register, registry
from aunet.segment.readers.batch import binary_array
from aunet.segment.readers.compression import decompressed


@pytest.mark.parametrize("name, kind", [
    ("a.jsonl", "jsonl"), ("a.JSON.GZ", "jsonl.gz"), ("a.ndjson.zstd", "jsonl.zst"), ("b.pq", "parquet"),
    ("c.feather", "arrow"), ("d.parquet.gz", None), ("e.gz", None), ("notes.txt", None),
])
def test_formats_are_found_by_suffix_and_codecs_only_on_streamed_formats(name, kind):
    assert detect_format(Path(name)) == kind


def test_messages_list_the_registered_formats():
    assert expected_suffixes() == ".jsonl[.gz|.zst], .parquet or .arrow"
    assert registry.format_names() == ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow"]


def _read_lines(source):
    """A toy format: one document per line, as a new format module would define it."""
    with open(source.path, "rb") as raw:
        texts = b"".join(decompressed(raw, source.codec)).splitlines()
    yield Batch(np.arange(1, len(texts) + 1, dtype=np.int64), binary_array(texts), input_bytes=source.path.stat().st_size)


def test_a_registered_format_is_read_by_segment_corpus(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_FORMATS", list(registry._FORMATS))  # the registration ends with the test
    register(InputFormat("lines", "text lines", (".lines",), _read_lines, streamed=True))
    (tmp_path / "a.lines").write_bytes(b"one doc\nanother doc\n")
    manifest = segment_corpus(tmp_path / "a.lines", tmp_path / "out", {"word1": "1@1"})
    assert manifest.documents_written == 2
    assert "text lines" in registry.format_labels()
    with pytest.raises(ValueError, match="already registered"):
        register(InputFormat("lines", "again", (".other",), _read_lines))
