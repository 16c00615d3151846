"""Streaming: the causal level of each byte equals levels(prefix)[-1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aunet import Segmenter
from text_strategies import STRATEGY_SETS, byte_docs, texts

SPECS = dict(STRATEGY_SETS, custom=[(r"\d(?=\d)", r"[.!?]\s")])


def prefix_levels(seg: Segmenter, data: bytes) -> list[int]:
    return [int(seg.levels(data[: p + 1])[-1]) for p in range(len(data))]


@pytest.mark.parametrize("name", list(SPECS))
@settings(max_examples=120, deadline=None)
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
