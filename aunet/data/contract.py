"""Shards must be what the model was built for (SPEC sections 2 and 8).

A shard directory carries the strategy list its masks were made with. A model with L pooling
levels reads levels 0..L; levels above L are clamped in the forward and a shallower mask never
reaches the deeper stages, so training or scoring on shards of another strategy silently
teaches or measures something else. `check_shards` refuses that, naming both sides, unless
the caller passes `allow=True` (`data.allow_shard_mismatch=true` for the trainer,
`aunet eval --allow-shard-mismatch`).
"""

from __future__ import annotations

from pathlib import Path

from aunet.segment import Manifest
from aunet.segment.strategy_order import describe_strategy, ordered_strategy


class ShardMismatch(ValueError):
    """Shards segmented with another strategy list (or depth) than the model expects."""


def check_shards(directories, strategy, n_levels: int, allow: bool = False, how_to_allow: str = "") -> list[str]:
    """Compare each shard directory's manifest strategy with `strategy` (the model's
    `data.regex.strategy`) as ordered lists, and its depth with `n_levels`. Raises
    `ShardMismatch` on the first difference, or with `allow` returns the differences (to be
    reported). Flat models (`n_levels == 0`) ignore levels, so any shards fit them."""
    if n_levels == 0:
        return []
    expected = ordered_strategy(strategy)
    problems = []
    for directory in directories:
        manifest = Manifest.load(Path(directory))
        found = ordered_strategy(manifest.strategy)
        if found == expected and len(found) == n_levels:
            continue
        what = (f"shards in {directory} were segmented with strategy {describe_strategy(manifest.strategy)} "
                f"({len(found)} stage(s)), but the model expects {describe_strategy(strategy)} ({n_levels} pooling level(s))")
        if not allow:
            raise ShardMismatch(f"{what}; re-segment the data with the model's strategy"
                                + (f", or {how_to_allow} to use them anyway" if how_to_allow else ""))
        problems.append(what)
    return problems
