"""Streaming: the causal level of each byte equals levels(prefix)[-1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet import Segmenter
from text_strategies import STRATEGY_SETS, byte_docs, texts
from helpers import examples

SPECS = dict(STRATEGY_SETS, custom=[(r"\d(?=\d)", r"[.!?]\s")])


def prefix_levels(seg: Segmenter, data: bytes) -> list[int]:
    return [int(seg.levels(data[: p + 1])[-1]) for p in range(len(data))]


@pytest.mark.parametrize("name", list(SPECS))
@settings(max_examples=examples(120), deadline=None)
@given(data=st.one_of(texts.map(str.encode), byte_docs), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_stream_equals_every_prefix(name, data, cuts):
    seg = Segmenter(SPECS[name])
    stream = seg.stream()
    bounds = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    pieces = [stream.push(data[a:b]) for a, b in zip(bounds, bounds[1:])]
    streamed = np.concatenate(pieces).tolist() if pieces else []
    assert streamed == prefix_levels(seg, data)
    assert stream.bytes_seen == len(data)


def test_causal_and_full_levels_differ_where_the_future_decides():
    seg = Segmenter({"punct": ""})
    text = b"x  \ny"
    # In the full text the run "  \n" starts a match (\s*[\r\n]) at its first space; a stream
    # that has seen only "x " cannot know a newline follows.
    assert seg.levels(text).tolist() == [0, 1, 0, 0, 0]
    assert seg.stream().push(text).tolist() == [0, 0, 0, 0, 0]


def non_final_bytes(data: bytes) -> list[int]:
    """In valid UTF-8: indices of the bytes followed by a continuation byte (the bytes inside
    a multi-byte character, before its last one)."""
    return [i for i in range(len(data) - 1) if data[i + 1] & 0xC0 == 0x80]


@pytest.mark.parametrize("name", list(STRATEGY_SETS))
@settings(max_examples=examples(80), deadline=None)
@given(text=texts, cut=st.integers(0, 400))
def test_no_pooled_position_inside_a_character(name, text, cut):
    """SPEC section 2: every non-final byte of a multi-byte character gets level 0, in the full
    mask of any prefix (even one that ends inside the character), in batches and in streams."""
    seg = Segmenter(STRATEGY_SETS[name])
    data = text.encode()
    prefix = data[: min(cut, len(data))]
    inside = non_final_bytes(data)
    for levels in (seg.levels(data), seg.levels_batch([prefix, data])[1], seg.stream().push(data)):
        assert all(levels[i] == 0 for i in inside)
    # A prefix cut inside a character: the unfinished tail is 0 and the rest is as if it were absent.
    whole = seg.levels(prefix)
    tail = len(prefix) - len(prefix.decode("utf-8", "ignore").encode())  # valid text: only the cut tail is lost
    assert whole[len(prefix) - tail:].tolist() == [0] * tail
    assert whole[: len(prefix) - tail].tolist() == seg.levels(prefix[: len(prefix) - tail]).tolist()
    assert seg.levels_batch([prefix])[0].tolist() == whole.tolist()


def test_a_lone_lead_byte_waits_and_a_dead_one_does_not():
    seg = Segmenter({"word1": "1@1", "word2": "2@1"})
    assert seg.levels(b"ab \xe6").tolist() == [0, 0, 1, 0]  # could still become a character
    assert seg.levels(b"ab \xff").tolist() == [0, 0, 1, 2]  # never will: an "other" symbol
    assert seg.levels(b"ab \xed\xa0").tolist() == [0, 0, 1, 2, 0]  # only a surrogate could follow
    assert seg.stream().push(b"ab \xe6").tolist() == [0, 0, 1, 0]
