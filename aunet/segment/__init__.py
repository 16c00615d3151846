"""Preprocessing: text in, level masks and Arrow shards out (SPEC sections 2 and 3).

`Segmenter` computes level masks; `segment_corpus` turns corpora into shard directories
described by a `Manifest`; `verify`, `inspect` and `merge` check, show and combine them.
Errors are the `SegmentError` family.
"""

from aunet.segment.corpus import expand_inputs, parse_size, segment_corpus
from aunet.segment.errors import BadDocument, InvalidRequest, ManifestError, MissingManifest, SegmentError
from aunet.segment.segmenter import LevelStream, Segmenter
from aunet.segment.shards import Manifest, ShardInfo
from aunet.segment.tools import inspect, merge, verify

__all__ = [
    "Segmenter", "LevelStream", "segment_corpus", "expand_inputs", "parse_size", "Manifest", "ShardInfo",
    "verify", "inspect", "merge", "SegmentError", "InvalidRequest", "BadDocument", "ManifestError", "MissingManifest",
]
