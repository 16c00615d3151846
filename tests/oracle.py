"""A small pure-Python implementation of SPEC section 2 on the `regex` package.

This is how the reference computes masks (finditer over the decoded text, offsets mapped to the
last byte of each code point). It lives with the tests and benches only: it is the yardstick
the Rust segmenter is checked and timed against.
"""

from __future__ import annotations

import regex

START = {
    "word": r"\p{N}{1,3}|(?:[^\s\p{L}\p{N}]{1,3}[\r\n]*)|\s*[\r\n]",
    "pretok": r"( ?\p{L}{1,16})|\p{N}{1,3}| ?([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "punct": r"\d{1,3}(?=(\d{3})+(?!\d))|\d{1,3}(?=\D|$)|([^\s\p{L}\p{N}]){1,3}+[\r\n]*|\s*[\r\n]",
}
# Invalid bytes decode to lone surrogates (surrogateescape), one per byte; they then stand for
# U+FFFD, as SPEC section 2 says.
_ESCAPES = {0xDC80 + i: 0xFFFD for i in range(128)}


# Every proper prefix of the UTF-8 encoding of a scalar value: the byte strings that more bytes
# can still complete into one character. (Python's incremental decoder is no oracle here: it
# also holds back b"\xed\xa0", which can only become a surrogate.)
_UNFINISHED = frozenset(
    chr(cp).encode()[:k] for cp in range(0x80, 0x110000) if not 0xD800 <= cp <= 0xDFFF
    for k in range(1, len(chr(cp).encode()))
)


def incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of `data` are an unfinished character (0-3)."""
    return next((k for k in (3, 2, 1) if data[-k:] in _UNFINISHED and len(data) >= k), 0)


class OracleSegmenter:
    def __init__(self, strategy):
        items = strategy.items() if isinstance(strategy, dict) else strategy
        self.rules = []
        for key, param in items:
            kind = next((k for k in START if key is not None and key.startswith(k)), None)
            if isinstance(strategy, dict) or kind is not None and regex.fullmatch(r"[0-9_]*", key[len(kind):]):
                start = regex.compile(START[kind])
                if kind == "word":
                    group, moduli = param.split("@")
                    end = regex.compile(r"(\S+?\s){%d}" % int(group))
                    moduli = [int(m) for m in moduli.split("-")]
                else:
                    end, moduli = None, [1]
            else:
                start = regex.compile(key) if key is not None else None
                end = regex.compile(param) if param is not None else None
                moduli = [1]
            self.rules.append((start, end, moduli))

    def levels(self, data: bytes) -> bytearray:
        out = bytearray(len(data))
        # An unfinished character at the end is left out (SPEC section 2).
        data = data[: len(data) - incomplete_tail(data)]
        text = data.decode("utf-8", "surrogateescape")
        last, pos = [], 0
        for ch in text:
            pos += 1 if 0xDC80 <= ord(ch) <= 0xDCFF else len(ch.encode("utf-8"))
            last.append(pos - 1)
        text = text.translate(_ESCAPES)
        for i, (start, end, moduli) in enumerate(self.rules):
            if start is not None:
                for m in start.finditer(text):
                    if m.start() < len(text):
                        out[last[m.start()]] = i + 1
            if end is not None:
                for n, m in enumerate(end.finditer(text)):
                    if m.end() > 0 and any(n % mod == 0 for mod in moduli):
                        out[last[m.end() - 1]] = i + 1
        return out
