"""The installed package imports its compiled core."""

from pathlib import Path

import aunet
from aunet import _segmenter


def test_compiled_module_is_inside_the_package():
    assert Path(_segmenter.__file__).parent == Path(aunet.__file__).parent
    assert Path(_segmenter.__file__).suffix in {".so", ".pyd"}


def test_core_version_matches_package():
    assert aunet.core_version == aunet.__version__


def test_core_runs_through_the_public_api():
    seg = aunet.Segmenter({"word1": "1@1", "word2": "2@1"})
    assert seg.levels("The cat sat.").tolist() == [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2]
