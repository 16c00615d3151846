"""Shard checksums: XXH3-128 for directories written now, SHA-256 still checked in directories
written before (manifests and progress markers with a "sha256" field), and a clear error for
an algorithm this version does not know."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import xxhash

from aunet import segment_corpus
from aunet.data import ShardSource
from aunet.segment import ManifestError, verify
from aunet.segment.layout import MANIFEST
from aunet.segment.shards import Manifest, checksum_matches
from segment_fixtures import STRATEGY, sample_texts, write_jsonl
from segment_fixtures import read_all, segment

SHARD_SIZE = 8_000  # about 3 shards per input


def base_name(path: str) -> str:
    """A shard's name without the generation a redo gives it (`layout.shard_name`)."""
    return re.sub(r"\.g\d+(?=\.arrow$)", "", path)


def write_inputs(root: Path) -> Path:
    inputs = root / "in"
    inputs.mkdir()
    for i in range(3):
        write_jsonl(inputs / f"in{i}.jsonl", sample_texts(300, seed=i))
    return inputs


def run(inputs: Path, out: Path, **kw):
    return segment_corpus(inputs, out, STRATEGY, shard_size=SHARD_SIZE, **kw)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(inputs, a shard directory of them written by this version)."""
    root = tmp_path_factory.mktemp("checksum")
    inputs = write_inputs(root)
    run(inputs, root / "shards")
    return inputs, root / "shards"


def copy(directory: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(directory, out)
    return out


def flip_a_byte(path: Path) -> None:
    """One byte changed in place, in the middle of the file: the size stays the manifest's."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_shard_entries(out: Path, change) -> None:
    """Apply `change` to every shard entry of the manifest and of every progress marker."""
    for path in [out / MANIFEST, *sorted((out / ".progress").glob("*.json"))]:
        raw = json.loads(path.read_text())
        for entry in raw["shards"]:
            change(entry)
        path.write_text(json.dumps(raw))


def to_old_format(out: Path) -> None:
    """Rewrite the directory as the version before XXH3-128 wrote it: "sha256": "<hex>" with the
    real SHA-256 of each shard, and no "checksum"."""
    def change(entry):
        del entry["checksum"]
        entry["sha256"] = hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()
    rewrite_shard_entries(out, change)


def test_a_new_directory_records_the_xxh3_128_of_each_shard(written):
    _, out = written
    manifest = Manifest.load(out)
    assert len(manifest.shards) > 3
    for shard in manifest.shards:
        assert shard.checksum == "xxh3_128:" + xxhash.xxh3_128((out / shard.path).read_bytes()).hexdigest()
        assert len(shard.checksum.removeprefix("xxh3_128:")) == 32
    # The progress markers record the same checksums (a rerun takes them into its manifest).
    marked = {s["path"]: s["checksum"] for m in (out / ".progress").glob("*.json") for s in json.loads(m.read_text())["shards"]}
    assert marked == {s.path: s.checksum for s in manifest.shards}
    assert not any("sha256" in entry for entry in json.loads((out / MANIFEST).read_text())["shards"])


def test_verify_passes_then_names_the_shard_with_a_flipped_byte(written, tmp_path):
    out = copy(written[1], tmp_path)
    assert "OK" in segment("verify", out).stdout
    shard = out / Manifest.load(out).shards[1].path
    size = shard.stat().st_size
    flip_a_byte(shard)
    assert shard.stat().st_size == size
    proc = segment("verify", out, check=1)
    assert f"FAIL {shard}: checksum mismatch" in proc.stdout
    assert proc.stdout.count("FAIL") == 1
    with pytest.raises(ValueError, match=rf"shard {shard} has checksum xxh3_128:[0-9a-f]{{32}}, the manifest lists"):
        read_all(out, verify=True)


def test_a_directory_with_sha256_checksums_still_verifies_loads_and_resumes(written, tmp_path):
    inputs, new = written
    out = copy(new, tmp_path)
    to_old_format(out)
    manifest = Manifest.load(out)
    assert all(s.checksum.startswith("sha256:") and len(s.checksum) == len("sha256:") + 64 for s in manifest.shards)
    assert all(checksum_matches(out / s.path, s.checksum) for s in manifest.shards)
    assert "OK" in segment("verify", out).stdout
    assert read_all(out, verify=True) > 0  # the loader with data.verify_shards checks SHA-256

    # A rerun (with --repair: every shard's SHA-256 is read and checked) redoes nothing.
    again = run(inputs, out, repair=True)
    assert (again.run.files_processed, again.run.files_done_before) == (0, 3)
    assert [(s.path, s.checksum) for s in again.shards] == [(s.path, s.checksum) for s in manifest.shards]
    assert verify(out) == []

    # Damage under the old checksum is still caught: by verify, the loader, and --repair, which
    # redoes that file only, its new shards with XXH3-128 beside the others' SHA-256.
    damaged = manifest.shards[0]
    flip_a_byte(out / damaged.path)
    assert f"FAIL {out / damaged.path}: checksum mismatch" in segment("verify", out, check=1).stdout
    with pytest.raises(ValueError, match=rf"has checksum sha256:[0-9a-f]{{64}}, the manifest lists {damaged.checksum}"):
        ShardSource(out, verify=True)._reader(0)
    repaired = run(inputs, out, repair=True)
    assert (repaired.run.files_processed, repaired.run.files_done_before) == (1, 2)
    redone = damaged.path.split("-")[1]  # its input's index, in part-{index}-{j}.arrow
    expected = {s.path: s.checksum for s in manifest.shards}
    expected.update({s.path: s.checksum for s in Manifest.load(new).shards if s.path.split("-")[1] == redone})
    # The redone input's shards come under the next generation of names (layout.shard_name).
    assert {base_name(s.path): s.checksum for s in repaired.shards} == expected
    assert {s.checksum.split(":")[0] for s in repaired.shards} == {"sha256", "xxh3_128"}
    assert verify(out) == []


def test_an_unknown_checksum_algorithm_is_a_clear_error(written, tmp_path):
    out = copy(written[1], tmp_path)
    first = Manifest.load(out).shards[0].path

    def change(entry):
        entry["checksum"] = "md5:" + "0" * 32
    rewrite_shard_entries(out, change)
    with pytest.raises(ManifestError, match=rf"{out / MANIFEST}: unknown checksum algorithm 'md5'.*\(shard {first}\)"):
        Manifest.load(out)
    proc = segment("verify", out, check=1)
    assert "unknown checksum algorithm 'md5'" in proc.stderr and str(out / MANIFEST) in proc.stderr
    with pytest.raises(ManifestError, match=rf"{out / first}: unknown checksum algorithm 'md5'"):
        checksum_matches(out / first, "md5:" + "0" * 32)
    with pytest.raises(ManifestError, match=rf"{out / first}: checksum 'deadbeef' has no 'algorithm:' prefix"):
        checksum_matches(out / first, "deadbeef")


def test_a_marker_with_an_unknown_algorithm_is_redone(written, tmp_path):
    inputs, new = written
    out = copy(new, tmp_path)
    marker = out / ".progress" / "000001.json"
    raw = json.loads(marker.read_text())
    for entry in raw["shards"]:
        entry["checksum"] = "blake3:" + "0" * 64
    marker.write_text(json.dumps(raw))
    again = run(inputs, out)  # a checksum this version cannot check: that file is segmented again
    assert (again.run.files_processed, again.run.files_done_before) == (1, 2)
    assert [(base_name(s.path), s.checksum) for s in again.shards] == [(s.path, s.checksum) for s in Manifest.load(new).shards]
