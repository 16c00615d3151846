"""Counting device-to-host reads on a CPU machine, where every tensor is a host tensor.

A read is any call that needs a tensor's values on the host: `.item()`, `.tolist()`, `.cpu()`,
`.numpy()`, `bool()`/`int()`/`float()` of a tensor, `np.asarray(tensor)`. On a GPU each of these
waits for the device. A read's result is a host copy: reads of it are not counted again, and
neither are reads of tensors made from numpy arrays (the host's own data).
"""

from __future__ import annotations

import contextlib
import traceback

import torch

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__")
_HOST = "_aunet_host_copy"


class SyncCounter:
    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        """(method, the aunet line that called it)."""

    @contextlib.contextmanager
    def counting(self):
        originals = {name: getattr(torch.Tensor, name) for name in READS}
        real_from_numpy = torch.from_numpy

        def tagged_from_numpy(array):
            t = real_from_numpy(array)
            setattr(t, _HOST, True)
            return t

        def wrap(name, original):
            def read(t, *a, **k):
                out = original(t, *a, **k)
                if not getattr(t, _HOST, False):
                    self.calls.append((name, _caller()))
                    if isinstance(out, torch.Tensor):
                        setattr(out, _HOST, True)
                return out
            return read

        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(name, original))
        torch.from_numpy = tagged_from_numpy
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
            torch.from_numpy = real_from_numpy


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/aunet/" in frame.filename:
            return f"{frame.filename.split('/aunet/')[-1]}:{frame.lineno}"
    return "?"
