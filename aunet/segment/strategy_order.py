"""Strategy lists compared as what they are: ORDERED lists of (kind, parameter) pairs.

Strategy i defines stage i+1 (SPEC section 2), so `{"pretok": "", "word": "2@1"}` and its
reverse give different masks, although Python's dict equality calls them equal. Every place
that compares two strategy lists (resume fingerprints, `verify`, a loader opening shards, the
trainer and `aunet eval` checking shards against the model) goes through `ordered_strategy`.

The compiled core reads the stages (`aunet._segmenter.strategy_stages`), as `Segmenter` does,
so two spellings of the same stage compare equal: a mapping key names its kind by prefix
(`word1`, `word_b` and `word` are all `word`), the parameter of `pretok`/`punct` is ignored,
and `word` parameters are compared as numbers (`" 1@1"` is `1@1`). Nothing is refused here:
a stored list is described whatever it holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aunet._segmenter import strategy_stages


def ordered_strategy(strategy) -> list[tuple[str, str]]:
    """`strategy` (the config mapping, or a list of pairs, as `Segmenter` takes it) as a list of
    (kind, parameter) pairs in stage order; a custom stage is ("custom", '[start, end]')."""
    if strategy is None:
        return []
    keyed = isinstance(strategy, Mapping)
    entries = list(strategy.items()) if keyed else [(first, second) for first, second in strategy]
    # A key is read as text; a list-form first element that is no string is a custom pattern.
    names = [str(first) if keyed else first if isinstance(first, str) else None for first, _ in entries]
    stages = strategy_stages([(name, None if param is None else str(param)) for name, (_, param) in zip(names, entries)], keyed)
    return [stage if stage is not None else ("custom", json.dumps([first, param])) for stage, (first, param) in zip(stages, entries)]


def same_strategy(a, b) -> bool:
    return ordered_strategy(a) == ordered_strategy(b)


def describe_strategy(strategy) -> str:
    """`[word 1@1, word 2@1]`: the ordered list, for error messages."""
    return "[" + ", ".join(f"{k} {p}".rstrip() for k, p in ordered_strategy(strategy)) + "]"
