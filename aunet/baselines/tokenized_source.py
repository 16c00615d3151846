"""A shard directory read through a BPE tokenizer: the BPE baseline's training data.

A `aunet.data.Source` like `ShardSource` (documents by (unit, row), so the loader's order, packing and
exact resume are shared), but a document is its token ids and its levels are all 0 (a flat
model has no pooling). Every document is tokenized once, when the source opens, and kept in
memory: fine for the comparison runs it exists for, not for web-scale corpora.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from aunet.baselines.bpe import BPE, load_bpe
from aunet.data.shard_source import ShardSource, SourceOpener

ENCODE_BATCH = 512


class TokenizedSource:
    depth = 0

    def __init__(self, source: ShardSource, bpe: BPE):
        self.source = source
        self.directory, self.manifest = source.directory, source.manifest
        self.units, self.unit_rows, self.first_doc = source.units, source.unit_rows, source.first_doc
        self.bos_id, self.eos_id, self.token_bytes = bpe.bos_id, bpe.eos_id, bpe.token_bytes
        refs = [(u, r) for u in range(source.units) for r in range(source.unit_rows[u])]
        pieces, invalid = [], []
        for i in range(0, len(refs), ENCODE_BATCH):
            docs = [source.document(u, r)[0].tobytes() for u, r in refs[i:i + ENCODE_BATCH]]
            invalid += [ref for ref, doc in zip(refs[i:i + ENCODE_BATCH], docs) if not _is_utf8(doc)]
            pieces += bpe.encode_batch(docs)
        if invalid:
            unit, row = invalid[0]
            warnings.warn(f"data source {source.directory}: {len(invalid)} documents are not valid UTF-8 (first: unit {unit}, "
                          f"row {row}); the BPE tokenizer reads each bad byte as U+FFFD, which counts 3 bytes in bpb", stacklevel=2)
        self.offsets = np.zeros(len(refs) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=self.offsets[1:])
        self.tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        self._zeros = np.zeros(int(np.diff(self.offsets).max(initial=0)), dtype=np.uint8)

    @property
    def documents(self) -> int:
        return self.source.documents

    @property
    def total_tokens(self) -> int:
        return len(self.tokens)

    def document(self, unit: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.first_doc[unit]) + row
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self._zeros[: b - a]

    def length(self, unit: int, row: int) -> int:
        i = int(self.first_doc[unit]) + row
        return int(self.offsets[i + 1] - self.offsets[i])

    def unit_text_bytes(self, unit: int) -> int:
        """Tokens of a unit (what the rank split balances for this source)."""
        a, b = int(self.first_doc[unit]), int(self.first_doc[unit + 1])
        return int(self.offsets[b] - self.offsets[a])

    def doc_lengths(self, unit: int) -> np.ndarray:
        a, b = int(self.first_doc[unit]), int(self.first_doc[unit + 1])
        return np.diff(self.offsets[a: b + 1])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def source_opener(tokenizer_file: str | Path | None) -> SourceOpener:
    """How shard directories are read for a model whose tokenizer is `tokenizer_file`
    (`data.tokenizer.bpe_file`): as bytes (`ShardSource`) when None, else as that BPE's
    token ids (the file is loaded once, here)."""
    if tokenizer_file is None:
        return ShardSource
    bpe = load_bpe(tokenizer_file)

    def open_tokenized(directory: str | Path, verify: bool = False) -> TokenizedSource:
        return TokenizedSource(ShardSource(directory, verify), bpe)

    return open_tokenized
