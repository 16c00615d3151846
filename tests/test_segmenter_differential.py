"""The Rust segmenter equals the `regex`-package oracle, byte for byte."""

from __future__ import annotations

import sysconfig
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from aunet import Segmenter
from oracle import OracleSegmenter
from text_strategies import STRATEGY_SETS, byte_docs, texts
from helpers import examples

SETS = list(STRATEGY_SETS)
CUSTOM = [
    [(r"\b\w", None)],
    [(None, r"[.!?]\s+")],
    [(r"\d(?=\d{2}\b)", r"\s+(?=\S)")],
    [("word1", "1@1"), (r"[\p{Lu}]", r"(?<=\.)\s")],
]


def assert_same(spec, data: bytes):
    ours = Segmenter(spec).levels(data)
    ref = OracleSegmenter(spec).levels(data)
    assert len(ours) == len(data)
    if ours.tobytes() != bytes(ref):
        i = next(i for i in range(len(data)) if ours[i] != ref[i])
        raise AssertionError(f"{spec}: first difference at byte {i}: ours {ours[i]}, oracle {ref[i]}; context {data[max(0, i - 16): i + 8]!r}")


@pytest.mark.parametrize("name", SETS)
@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_generated_unicode_text(name, text):
    assert_same(STRATEGY_SETS[name], text.encode("utf-8"))


@pytest.mark.parametrize("name", SETS)
@settings(max_examples=examples(200), deadline=None)
@given(data=byte_docs)
def test_arbitrary_bytes(name, data):
    assert_same(STRATEGY_SETS[name], data)


def assigned_only(text: str) -> str:
    """Custom patterns run on Rust's Unicode tables, the oracle on the regex package's newer
    ones (a documented gap): keep to code points that every Unicode version since 14 assigns."""
    return "".join(c if unicodedata.category(c) != "Cn" else "?" for c in text)


@pytest.mark.parametrize("spec", CUSTOM, ids=str)
@settings(max_examples=examples(150), deadline=None)
@given(text=texts.map(assigned_only))
def test_custom_regex_pairs(spec, text):
    assert_same(spec, text.encode("utf-8"))


def stdlib_sources(limit_bytes: int) -> list[bytes]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        out.append(data)
        total += len(data)
        if total >= limit_bytes:
            break
    return out


@pytest.mark.parametrize("name", ["word1", "word1+word2", "word1+word2+word4", "pretok", "punct"])
def test_python_standard_library_sources(name):
    spec = STRATEGY_SETS[name]
    docs = stdlib_sources(1_500_000)
    assert sum(map(len, docs)) >= 1_000_000
    ours = Segmenter(spec).levels_batch(docs, threads=2)
    oracle = OracleSegmenter(spec)
    for doc, mask in zip(docs, ours):
        assert mask.tobytes() == bytes(oracle.levels(doc))
