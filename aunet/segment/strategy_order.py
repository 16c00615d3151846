"""Strategy lists compared as what they are: ORDERED lists of (kind, parameter) pairs.

Strategy i defines stage i+1 (SPEC section 2), so `{"pretok": "", "word": "2@1"}` and its
reverse give different masks, although Python's dict equality calls them equal. Every place
that compares two strategy lists (resume fingerprints, `verify`, a loader opening shards, the
trainer and `aunet eval` checking shards against the model) goes through `ordered_strategy`.

Two spellings of the same stage compare equal: a mapping key names its kind by prefix
(`word1`, `word_b` and `word` are all `word`), the parameter of `pretok`/`punct` is ignored,
and `word` parameters are compared as numbers (`" 1@1"` is `1@1`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

KINDS = ("word", "pretok", "punct")
_LIST_KIND = re.compile(r"(word|pretok|punct)[0-9_]*")


def ordered_strategy(strategy) -> list[tuple[str, str]]:
    """`strategy` (the config mapping, or a list of pairs, as `Segmenter` takes it) as a list of
    (kind, parameter) pairs in stage order; a custom stage is ("custom", '[start, end]')."""
    if strategy is None:
        return []
    if isinstance(strategy, Mapping):
        out = []
        for key, value in strategy.items():
            kind = next((k for k in KINDS if str(key).startswith(k)), None)
            out.append(_builtin(kind, value) if kind else ("custom", json.dumps([key, value])))
        return out
    out = []
    for first, second in strategy:
        match = _LIST_KIND.fullmatch(first) if isinstance(first, str) else None
        out.append(_builtin(match.group(1), second) if match else ("custom", json.dumps([first, second])))
    return out


def _builtin(kind: str, param) -> tuple[str, str]:
    if kind != "word":
        return (kind, "")
    text = "" if param is None else str(param)
    group, _, moduli = text.partition("@")
    try:
        return ("word", f"{int(group)}@{'-'.join(str(int(m)) for m in moduli.split('-'))}")
    except ValueError:
        return ("word", text.strip())


def same_strategy(a, b) -> bool:
    return ordered_strategy(a) == ordered_strategy(b)


def describe_strategy(strategy) -> str:
    """`[word 1@1, word 2@1]`: the ordered list, for error messages."""
    return "[" + ", ".join(f"{k} {p}".rstrip() for k, p in ordered_strategy(strategy)) + "]"
