"""AU-Net: the byte-level Autoregressive U-Net language model.

The public API. The compiled Rust core lives in the private module ``aunet._segmenter``.
Names that need PyTorch (the model, its config, loading and generation) are imported on first
use, so ``from aunet import Segmenter`` in a preprocessing job does not import torch.

>>> from aunet import Segmenter
>>> Segmenter({"word1": "1@1"}).levels("a b").tolist()
[0, 0, 1]
"""

from __future__ import annotations

import importlib
import os
import sys

# numpy's OpenBLAS starts a thread per core on import, and they spin (sched_yield) for a while
# after numpy's import-time check: about 0.1 s of a short `aunet-segment` run on 2 cores. Our
# command-line programs make no BLAS call through numpy (torch has its own threads), so they
# start it with one thread; the user's own setting wins, and `import aunet` in a user's
# program changes nothing.
if os.path.basename(sys.argv[0] if sys.argv else "") in ("aunet-segment", "aunet") and "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from aunet._segmenter import __version__ as core_version  # noqa: E402
from aunet.segment import LevelStream, Manifest, SegmentError, Segmenter, segment_corpus  # noqa: E402
from aunet.version import __version__  # noqa: E402

_LAZY = {
    "HierarchicalTransformer": "aunet.model",
    "ModelArgs": "aunet.config",
    "TrainArgs": "aunet.config",
    "load_config": "aunet.config",
    "load_model": "aunet.inference.export",
    "Generator": "aunet.inference.generate",
}

__all__ = ["__version__", "core_version", "Segmenter", "LevelStream", "segment_corpus", "Manifest", "SegmentError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aunet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
