"""Level masks: which bytes open a segment at which stage (SPEC section 2).

>>> seg = Segmenter({"word1": "1@1", "word2": "2@1"})
>>> seg.levels("The cat sat.").tolist()
[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2]
>>> seg.levels(b"a b", bos=True, eos=True).tolist()
[2, 0, 1, 0, 0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from aunet._segmenter import PRETOK_START, PUNCT_START, WORD_START, LevelStream
from aunet._segmenter import Segmenter as _CoreSegmenter

if TYPE_CHECKING:
    import pyarrow as pa

Doc = Union[bytes, bytearray, memoryview, str]
StrategySpec = Union[Mapping[str, str], Sequence[Sequence[Union[str, None]]]]

__all__ = ["Segmenter", "LevelStream", "WORD_START", "PRETOK_START", "PUNCT_START"]


def _as_bytes(doc: object, where: str) -> bytes:
    if isinstance(doc, bytes):
        return doc
    if isinstance(doc, str):
        # surrogatepass: a str holding lone surrogates still maps to bytes (invalid UTF-8,
        # which the segmenter handles byte by byte) instead of raising.
        return doc.encode("utf-8", "surrogatepass")
    if isinstance(doc, (bytearray, memoryview)):
        return bytes(doc)
    raise TypeError(f"{where}: expected bytes or str, got {type(doc).__name__}")


def _pairs(strategy: object) -> tuple[list[tuple[str | None, str | None]], bool]:
    if isinstance(strategy, Mapping):
        pairs: list[tuple[str | None, str | None]] = []
        for key, value in strategy.items():
            if not isinstance(key, str) or not isinstance(value, (str, type(None))):
                raise TypeError(f"strategy mapping: key {key!r} and value {value!r} must be strings")
            pairs.append((key, value))
        return pairs, True
    if isinstance(strategy, (str, bytes)) or not isinstance(strategy, Iterable):
        raise TypeError(
            "strategy: expected a mapping like {'word1': '1@1'} or a list of "
            f"(kind_or_start_regex, param_or_end_regex) pairs, got {type(strategy).__name__}"
        )
    pairs = []
    for i, entry in enumerate(strategy):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise TypeError(f"strategy entry {i}: expected a pair, got {entry!r}")
        a, b = entry
        for part in (a, b):
            if part is not None and not isinstance(part, str):
                raise TypeError(f"strategy entry {i}: {part!r} is not a string or None")
        pairs.append((a, b))
    return pairs, False


class Segmenter:
    """Computes level masks for a strategy list.

    ``strategy`` is the config mapping (``{"word1": "1@1", "word2": "2@1"}``: a key names its
    kind by prefix) or a list of pairs. In the list form, a first element that is a kind name
    (``word``, ``pretok`` or ``punct``, optionally followed by digits or underscores) takes the
    second element as its parameter; any other pair is a custom (start_regex, end_regex), where
    either may be None.

    Instances are immutable and thread-safe; they can be pickled into DataLoader workers.
    """

    def __init__(self, strategy: StrategySpec):
        pairs, keyed = _pairs(strategy)
        self._spec = (pairs, keyed)
        self._core = _CoreSegmenter(pairs, keyed)

    def __reduce__(self):
        pairs, keyed = self._spec
        return (_rebuild, (pairs, keyed))

    def __repr__(self) -> str:
        return f"Segmenter({self.strategy!r})"

    @property
    def strategy(self) -> list[tuple[str | None, str | None]]:
        return list(self._spec[0])

    @property
    def depth(self) -> int:
        """Number of strategies: the level of BOS, and the highest level a byte can get."""
        return self._core.depth

    def levels(self, doc: Doc, *, bos: bool = False, eos: bool = False) -> np.ndarray:
        """One uint8 level per byte of ``doc`` (UTF-8 for str); BOS/EOS add one entry each."""
        return self._core.levels(_as_bytes(doc, "levels"), bool(bos), bool(eos))

    def levels_batch(self, docs, threads: int | None = None):
        """Levels of many documents in parallel, without per-byte Python work.

        ``docs`` is a list of bytes/str, or a pyarrow (large_)string/binary Array or
        ChunkedArray. A list gives a list of uint8 arrays (views into one buffer); an Arrow
        input gives a ``large_binary`` array of the same length and nulls. ``threads``
        defaults to the CPUs available to this process.
        """
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        try:
            import pyarrow as pa
        except ImportError:  # pragma: no cover - pyarrow is a dependency
            pa = None
        if pa is not None and isinstance(docs, pa.ChunkedArray):
            return pa.chunked_array([self._levels_arrow(c, threads) for c in docs.chunks], type=pa.large_binary())
        if pa is not None and isinstance(docs, pa.Array):
            return self._levels_arrow(docs, threads)
        if isinstance(docs, (str, bytes)) or not isinstance(docs, Iterable):
            raise TypeError(f"levels_batch: expected a list of documents or a pyarrow array, got {type(docs).__name__}")
        docs = docs if isinstance(docs, list) else list(docs)
        try:  # bytes (and bytearray) go to Rust as they are, without a Python pass over them
            return self._core.levels_list(docs, threads)
        except TypeError:
            blobs = [_as_bytes(d, f"levels_batch document {i}") for i, d in enumerate(docs)]
            return self._core.levels_list(blobs, threads)

    def _levels_arrow(self, arr: "pa.Array", threads: int | None) -> "pa.Array":
        import pyarrow as pa

        views = {
            pa.string(): (pa.binary(), np.int32),
            pa.binary(): (pa.binary(), np.int32),
            pa.large_string(): (pa.large_binary(), np.int64),
            pa.large_binary(): (pa.large_binary(), np.int64),
        }
        if arr.type not in views:
            raise TypeError(f"levels_batch: expected a string or binary Arrow array, got {arr.type}")
        binary_type, offset_dtype = views[arr.type]
        arr = arr.view(binary_type)
        _, offsets_buf, data_buf = arr.buffers()
        n = len(arr)
        offsets = np.frombuffer(offsets_buf, dtype=offset_dtype)[arr.offset : arr.offset + n + 1].astype(np.int64)
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        masks = self._core.levels_offsets(data, offsets, threads)
        validity = arr.is_valid().buffers()[1] if arr.null_count else None
        return pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            n,
            [validity, pa.py_buffer(offsets - offsets[0]), pa.py_buffer(masks)],
            null_count=arr.null_count,
        )

    def stream(self) -> "LevelStream":
        """An incremental segmenter for generation: ``push(b)`` returns the causal level of
        each pushed byte, i.e. its level in the mask of the prefix that ends at it."""
        return self._core.stream()


def _rebuild(pairs, keyed) -> Segmenter:
    seg = Segmenter.__new__(Segmenter)
    seg._spec = (pairs, keyed)
    seg._core = _CoreSegmenter(pairs, keyed)
    return seg
