"""Hypothesis strategies for text that exercises every branch of the segmentation patterns."""

from __future__ import annotations

from hypothesis import strategies as st

WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
# str.isspace() but not \s in the regex package, and a zero-width space that is neither.
NEAR_WHITESPACE = "\x1c\x1d\x1e\x1f\u200b\ufeff"

PIECES = [
    st.sampled_from(["The", "cat", "sat", "on", "the", "mat", "a", "I", "ÉCOLE", "naïve", "Straße"]),
    st.sampled_from(["Привет", "мир", "Ёлка", "Ωμέγα"]),
    st.sampled_from(["日本語のテキスト", "中文没有空格", "한국어", "ภาษาไทย"]),
    st.sampled_from(["مرحبا", "بالعالم", "שלום"]),
    st.sampled_from(["🙂", "👩‍👩‍👧", "🏳️‍🌈", "👍🏽", "\u200d"]),
    st.sampled_from(["e\u0301", "a\u0308\u0323", "\u0301"]),
    st.sampled_from(["\r\n", "\n", "\r", "\n\n", " \n ", "\r\n\r\n"]),
    st.text(alphabet=WHITESPACE + NEAR_WHITESPACE, min_size=1, max_size=5),
    st.integers(min_value=1, max_value=14).map(lambda n: "1234567890" * 2)
    .flatmap(lambda s: st.integers(1, 14).map(lambda n: s[:n])),
    st.sampled_from(["٣٤٥", "１２３", "²³", "Ⅻ", "½", "𝟙𝟚"]),
    st.text(alphabet="!?.,;:'\"()[]{}-_/\\@#$%^&*+=<>|~`…—«»", min_size=1, max_size=6),
    st.characters(exclude_categories=["Cs"]),
    st.just(" "),
    st.just("  "),
]

texts = st.lists(st.one_of(*PIECES), max_size=40).map("".join)

# Arbitrary bytes, and valid text cut or spliced with invalid sequences.
INVALID = [b"\xff", b"\x80", b"\xbf\xbf", b"\xc0\xaf", b"\xe6\x97", b"\xe6", b"\xf0\x9f\x99", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"]
byte_docs = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(texts.map(lambda t: t.encode()), st.sampled_from(INVALID)), max_size=12).map(b"".join),
)

STRATEGY_SETS = {
    "word1": {"word1": "1@1"},
    "word1+word2": {"word1": "1@1", "word2": "2@1"},
    "word1+word2+word4": {"word1": "1@1", "word2": "2@1", "word4": "4@1"},
    "word-moduli": {"word1": "1@2-3", "word2": "3@1"},
    "pretok": {"pretok": ""},
    "punct": {"punct": ""},
    "punct+word2": {"punct": "", "word2": "2@1"},
}
