"""The shard directory layout: one module names every file, and the writers follow it."""

from __future__ import annotations

from fnmatch import fnmatch

from aunet.segment import layout


def test_names_spell_the_documented_layout():
    assert layout.shard_name(3, 12) == "part-000003-0012.arrow"
    assert layout.rejects_name(3) == "rejects/part-000003.jsonl"
    assert layout.marker_name(3) == ".progress/000003.json"
    assert layout.rank_manifest_name(1, 4) == "manifest.rank1-of4.json"
    assert layout.manifest_name(0, 1) == layout.MANIFEST == "manifest.json"
    assert layout.manifest_name(1, 4) == layout.rank_manifest_name(1, 4)


def test_globs_match_the_names_they_stand_for():
    assert fnmatch(layout.shard_name(7, 0), layout.SHARD_GLOB)
    assert fnmatch(layout.shard_name(7, 0) + ".tmp", layout.input_glob(7))
    assert not fnmatch(layout.shard_name(8, 0), layout.input_glob(7))
    assert fnmatch(layout.rank_manifest_name(2, 3), layout.RANK_MANIFEST_GLOB)
    assert layout.rejects_name(0).startswith(layout.REJECTS_DIR + "/")
    assert layout.marker_name(0).startswith(layout.PROGRESS_DIR + "/")
