"""The AU-Net model (SPEC section 4): `HierarchicalTransformer`, its decoding state `DecodeCache`, the
per-batch stage lengths (`stage_lengths`, computed on the host) and the bits-per-byte metric."""

import sys

from aunet.model.hierarchical import HierarchicalTransformer
from aunet.model.kv_cache import DecodeCache
from aunet.model.lengths import stage_lengths
from aunet.model.metrics import bpb, byte_nats

__all__ = ["DecodeCache", "HierarchicalTransformer", "bpb", "byte_nats", "stage_lengths"]

if "transformers" in sys.modules:
    # A transformers directory's modeling_aunet.py is importing us, possibly a copy written
    # before the fused projections (which does not register the conversion itself): from here on
    # transformers fuses split projections when it loads AU-Net weights.
    from aunet.model.convert import register_transformers_conversion

    register_transformers_conversion()
