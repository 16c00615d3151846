"""Streaming training data over `aunet-segment` shards (SPEC section 6)."""

from aunet.data.loader import LoaderArgs, PackedLoader
from aunet.data.shard_source import ShardSource

__all__ = ["LoaderArgs", "PackedLoader", "ShardSource"]
