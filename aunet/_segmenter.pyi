"""Stubs of the compiled core (checked against the module by tests/test_stubs.py)."""

from typing import final

import numpy as np
import numpy.typing as npt

__all__ = ["LevelStream", "PRETOK_START", "PUNCT_START", "Segmenter", "WORD_START", "__version__", "class_of", "jsonl_texts", "strategy_stages"]
__version__: str
WORD_START: str
PRETOK_START: str
PUNCT_START: str

def class_of(cp: int) -> int: ...
def jsonl_texts(
    pieces: list[tuple[bytes, int, int] | int],
    first_line: int,
    field: bytes | None = None,
    keep: list[bytes] = ...,
    max_depth: int = 512,
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    int,
    list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8]]],
]: ...

def strategy_stages(pairs: list[tuple[str | None, str | None]], keyed: bool) -> list[tuple[str, str] | None]: ...

@final
class Segmenter:
    def __new__(cls, pairs: list[tuple[str | None, str | None]], keyed: bool) -> Segmenter: ...
    @property
    def depth(self) -> int: ...
    def levels(self, data: bytes, bos: bool, eos: bool) -> npt.NDArray[np.uint8]: ...
    def levels_many(self, docs: list[bytes], threads: int | None) -> npt.NDArray[np.uint8]: ...
    def levels_offsets(
        self, data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], threads: int | None
    ) -> npt.NDArray[np.uint8]: ...
    def stream(self) -> LevelStream: ...

@final
class LevelStream:
    def push(self, data: bytes) -> npt.NDArray[np.uint8]: ...
    @property
    def bytes_seen(self) -> int: ...
