"""AU-Net: the byte-level Autoregressive U-Net language model.

The compiled Rust core lives in the private module ``aunet._segmenter``; this package owns the
public API.
"""

from aunet._segmenter import __version__ as core_version
from aunet.segmenter import LevelStream, Segmenter

__version__ = "0.1.0"

__all__ = ["__version__", "core_version", "Segmenter", "LevelStream"]
