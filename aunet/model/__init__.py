"""The AU-Net model (SPEC section 4): `HierarchicalTransformer` and the bits-per-byte metric."""

from aunet.model.hierarchical import HierarchicalTransformer
from aunet.model.metrics import bpb, byte_nats

__all__ = ["HierarchicalTransformer", "bpb", "byte_nats"]
