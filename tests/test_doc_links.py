"""Every relative link in README.md, CONTRIBUTING.md and docs/*.md points to a file that exists,
and every #anchor to a heading of its target: a moved or renamed section breaks this test, not a
reader's click."""

from __future__ import annotations

import re

import pytest

from helpers import REPO_ROOT

DOCS = ["README.md", "CONTRIBUTING.md", *sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), outside code; the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in without_code_blocks(path.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    source = REPO_ROOT / doc
    assert source.exists(), doc
    broken = []
    for target in LINK.findall(without_code(source.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked (no network in tests)
            continue
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc}: broken links: {broken}"
