"""The Rust class tables equal the `regex` package's classes on every code point."""

import subprocess
import sys

import regex

from aunet import _segmenter
from helpers import REPO_ROOT

LETTER, NUMBER, DIGIT, WHITE, SPACE, NEWLINE = 1, 2, 4, 8, 16, 32


def test_generated_tables_are_up_to_date():
    tool = REPO_ROOT / "rust_segmenter" / "tools" / "gen_unicode_tables.py"
    proc = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_code_point_has_the_regex_package_class():
    checks = [(LETTER, regex.compile(r"\p{L}")), (NUMBER, regex.compile(r"\p{N}")), (DIGIT, regex.compile(r"\d")), (WHITE, regex.compile(r"\s"))]
    mismatches = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        flags = _segmenter.class_of(cp)
        ch = chr(cp)
        for bit, pattern in checks:
            if bool(flags & bit) != bool(pattern.fullmatch(ch)):
                mismatches.append((hex(cp), bit))
        if bool(flags & SPACE) != (cp == 0x20) or bool(flags & NEWLINE) != (cp in (0x0A, 0x0D)):
            mismatches.append((hex(cp), "space/newline"))
    assert mismatches == []
