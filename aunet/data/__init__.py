"""Streaming training data over `aunet-segment` shards (SPEC section 6)."""

from aunet.data.loader import PackedLoader
from aunet.data.shard_source import ShardSource, Source

__all__ = ["PackedLoader", "ShardSource", "Source"]
