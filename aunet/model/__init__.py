"""The AU-Net model (SPEC section 4): `HierarchicalTransformer`, its decoding state `DecodeCache`, the
per-batch stage lengths (`stage_lengths`, computed on the host) and the bits-per-byte metric."""

from aunet.model.hierarchical import HierarchicalTransformer
from aunet.model.kv_cache import DecodeCache
from aunet.model.lengths import stage_lengths
from aunet.model.metrics import bpb, byte_nats

__all__ = ["DecodeCache", "HierarchicalTransformer", "bpb", "byte_nats", "stage_lengths"]
