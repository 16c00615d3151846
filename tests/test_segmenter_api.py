"""The public Segmenter API: inputs, outputs, errors."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pyarrow as pa
import pytest

from aunet import Segmenter

W12 = {"word1": "1@1", "word2": "2@1"}
DOCS = ["The cat sat on the mat. ", "", "Грамматика 12345 слов!\n", "日本語", "a  b\r\n\r\nc", "x" * 5000 + " y"]


def test_levels_accepts_bytes_str_and_buffers():
    seg = Segmenter(W12)
    expected = seg.levels(b"The cat sat.")
    assert expected.dtype == np.uint8
    for doc in ["The cat sat.", bytearray(b"The cat sat."), memoryview(b"The cat sat.")]:
        assert np.array_equal(seg.levels(doc), expected)


def test_bos_gets_full_depth_and_eos_zero():
    seg = Segmenter({"word1": "1@1", "word2": "2@1", "word4": "4@1"})
    assert seg.depth == 3
    levels = seg.levels("hi there", bos=True, eos=True)
    assert len(levels) == len("hi there") + 2
    assert levels[0] == 3 and levels[-1] == 0
    assert np.array_equal(levels[1:-1], seg.levels("hi there"))


def test_list_form_equals_mapping_form():
    assert np.array_equal(Segmenter([("word", "1@1"), ("word2", "2@1")]).levels(DOCS[0]), Segmenter(W12).levels(DOCS[0]))


def test_batch_equals_single_documents():
    seg = Segmenter(W12)
    for threads in (None, 1, 2, 7):
        out = seg.levels_batch(DOCS, threads=threads)
        assert len(out) == len(DOCS)
        for doc, mask in zip(DOCS, out):
            assert np.array_equal(mask, seg.levels(doc))
    assert seg.levels_batch([]) == []


def test_batch_of_a_list_gives_one_array_per_document_of_any_kind():
    """Documents of every accepted kind (str, bytes, bytearray, memoryview, empty ones, from a
    generator), each mask a uint8 array of its own length that stays valid (and writable) after
    the others are dropped: the arrays are views made in Rust into one buffer they keep alive."""
    seg = Segmenter(W12)
    docs = ["hi there", b"", b"x, y", bytearray(b"two words"), memoryview(b"a b c"), "\u00e9t\u00e9 ici", ""]
    for threads in (1, 3):
        out = seg.levels_batch((d for d in docs), threads=threads)
        assert [len(m) for m in out] == [len(d.encode() if isinstance(d, str) else bytes(d)) for d in docs]
        keep = out[2]
        del out
        want = seg.levels(b"x, y")
        assert keep.dtype == np.uint8 and keep.flags.writeable and np.array_equal(keep, want)
    with pytest.raises(TypeError, match="document 1"):
        seg.levels_batch([b"ok", 3.5])


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()])
def test_batch_on_arrow_arrays_keeps_rows_and_nulls(arrow_type):
    seg = Segmenter(W12)
    values = [d.encode() if arrow_type in (pa.binary(), pa.large_binary()) else d for d in DOCS]
    arr = pa.array([None, *values, None], type=arrow_type).slice(1, len(DOCS) + 1)
    out = seg.levels_batch(arr, threads=2)
    assert out.type == pa.large_binary()
    assert len(out) == len(arr)
    assert out.null_count == 1 and not out[len(DOCS)].is_valid
    for i, doc in enumerate(DOCS):
        assert out[i].as_py() == seg.levels(doc).tobytes()
    chunked = seg.levels_batch(pa.chunked_array([arr[:2], arr[2:]]))
    assert chunked.to_pylist() == out.to_pylist()


def test_segmenter_pickles():
    seg = pickle.loads(pickle.dumps(Segmenter(W12)))
    assert seg.levels("The cat sat.").tolist() == [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2]


@pytest.mark.parametrize(
    "strategy, message",
    [
        ({"bpe": "1@1"}, 'unknown strategy kind "bpe"'),
        ({"word1": "1"}, 'bad parameter "1" for strategy kind "word"'),
        ({"word1": "0@1"}, "group size"),
        ({"word1": "1@0"}, "modulus"),
        ([("(unclosed", None)], 'invalid regex "(unclosed"'),
        ([(None, None)], "needs a start regex"),
        ({}, "strategy list is empty"),
    ],
)
def test_bad_strategies_raise_value_error_naming_the_problem(strategy, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Segmenter(strategy)


@pytest.mark.parametrize("call", [
    lambda: Segmenter(42),
    lambda: Segmenter("word1"),
    lambda: Segmenter([("word", 1)]),
    lambda: Segmenter({"word1": 1}),
    lambda: Segmenter(W12).levels(123),
    lambda: Segmenter(W12).levels_batch(5),
    lambda: Segmenter(W12).levels_batch(["ok", 3.5]),
    lambda: Segmenter(W12).levels_batch(pa.array([1, 2])),
])
def test_wrong_types_raise_type_error(call):
    with pytest.raises(TypeError):
        call()


def test_bad_thread_count():
    with pytest.raises(ValueError, match="threads"):
        Segmenter(W12).levels_batch(DOCS, threads=0)
