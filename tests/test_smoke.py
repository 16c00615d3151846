"""The installed package imports its compiled core."""

from pathlib import Path

import aunet
from aunet import _segmenter


def test_compiled_module_is_inside_the_package():
    assert Path(_segmenter.__file__).parent == Path(aunet.__file__).parent
    assert Path(_segmenter.__file__).suffix in {".so", ".pyd"}


def test_core_version_matches_package():
    assert aunet.core_version == aunet.__version__


def test_core_function_runs():
    assert _segmenter.count_symbols("héllo wörld".encode()) == 11
    assert _segmenter.count_symbols(b"\xff\xfe") == 2
