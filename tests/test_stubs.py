"""The shipped stubs match the compiled module (mypy's stubtest), and the public API type-checks."""

import subprocess
import sys

import pytest

from helpers import REPO_ROOT

# Slow tier: mypy and stubtest, 6 s (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow


def test_stubs_match_the_compiled_module():
    proc = subprocess.run([sys.executable, "-m", "mypy.stubtest", "aunet._segmenter"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_segmenter_module_type_checks():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-error-summary", "aunet/segment/segmenter.py"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
