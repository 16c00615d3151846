"""`aunet.segment_corpus`, the one Python entry point of preprocessing: what it returns, what it
writes, and the typed errors it raises (the CLI maps them to exit codes; tests there)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

import aunet
from aunet import Manifest, segment_corpus
from aunet.segment import BadDocument, InvalidRequest, ManifestError, MissingManifest, SegmentError, merge, verify
from segment_fixtures import STRATEGY, sample_texts, write_jsonl
from segment_fixtures import read_shards, segment


def test_returns_the_manifest_it_writes_and_matches_the_cli(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(200))
    write_jsonl(tmp_path / "b.jsonl.zst", sample_texts(150, seed=3))
    m = segment_corpus(tmp_path, tmp_path / "api", STRATEGY, shard_size="4KB")
    assert m == Manifest.load(tmp_path / "api")
    assert m.documents_read == m.documents_written == 350 and m.documents_rejected == 0
    assert (m.run.files_processed, m.run.files_done_before) == (2, 0)
    assert m.text_bytes == sum(len(t.encode()) for t in sample_texts(200) + sample_texts(150, seed=3))
    assert verify(tmp_path / "api", deep=True) == []
    # The command line is a wrapper: same shards, byte for byte.
    segment(tmp_path / "a.jsonl", tmp_path / "b.jsonl.zst", "--out", tmp_path / "cli", "--strategy", "word1=1@1",
            "--strategy", "word2=2@1", "--shard-size", "4KB")
    cli = Manifest.load(tmp_path / "cli")
    assert [(s.path, s.checksum) for s in cli.shards] == [(s.path, s.checksum) for s in m.shards]
    again = segment_corpus([tmp_path / "a.jsonl", str(tmp_path / "b.jsonl.zst")], tmp_path / "api", STRATEGY, shard_size=4096)
    assert (again.run.files_processed, again.run.files_done_before) == (0, 2)
    assert again == m
    assert "run" not in json.loads((tmp_path / "api" / "manifest.json").read_text())


@pytest.mark.parametrize("kwargs, words", [
    ({"strategy": {"bpe": "1"}}, "unknown strategy kind"),
    ({"rank": 2, "world_size": 2}, "rank 2"),
    ({"workers": 0}, "workers"),
    ({"shard_size": "12XB"}, "invalid size"),
    ({"compression": "lz4"}, "compression"),
    ({"on_error": "ignore"}, "on_error"),
])
def test_bad_options_raise_invalid_request_before_any_output(tmp_path, kwargs, words):
    write_jsonl(tmp_path / "a.jsonl", ["x"])
    kwargs = {"strategy": STRATEGY, **kwargs}
    with pytest.raises(InvalidRequest, match=words) as info:
        segment_corpus(tmp_path / "a.jsonl", tmp_path / "out", kwargs.pop("strategy"), **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SegmentError)
    assert not (tmp_path / "out").exists()


def test_inputs_that_name_no_file_say_which(tmp_path):
    with pytest.raises(InvalidRequest, match="nothing-here") as info:
        segment_corpus(tmp_path / "nothing-here" / "*.jsonl", tmp_path / "out", STRATEGY)
    assert info.value.file.endswith("*.jsonl")


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_document_carries_file_and_line_across_workers(tmp_path, workers):
    write_jsonl(tmp_path / "a.jsonl", sample_texts(50))
    (tmp_path / "b.jsonl").write_text('{"text": "fine"}\n{"text": 7}\n')
    with pytest.raises(BadDocument) as info:
        segment_corpus(tmp_path, tmp_path / "out", STRATEGY, workers=workers)
    err = info.value
    assert err.file.endswith("b.jsonl") and err.location == "line 2" and "is int" in err.reason
    assert str(err).startswith(err.file) and "line 2" in str(err)
    assert not (tmp_path / "out" / "manifest.json").exists()
    # Executors that run steps in other processes (datatrove's) pickle it: nothing is lost.
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.file, again.location) == (type(err), str(err), err.file, err.location)


def test_skip_counts_rejects_in_the_returned_manifest(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\nnot json\n{"text": "also fine"}\n')
    m = segment_corpus(tmp_path / "a.jsonl", tmp_path / "out", STRATEGY, on_error="skip")
    assert (m.documents_read, m.documents_written, m.documents_rejected) == (3, 2, 1)
    assert [r[2] for r in read_shards(tmp_path / "out")] == [1, 3]


def test_errors_survive_pickling_with_their_fields():
    for err in (BadDocument("f.jsonl", "line 3", "malformed JSON"), InvalidRequest("bad", file="x", location="row 2"),
                MissingManifest("no manifest", file="d/manifest.json")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert (back.file, back.location) == (err.file, err.location)


def test_ranks_then_merge_give_one_manifest(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"in{i}.jsonl", sample_texts(40, seed=i))
    out = tmp_path / "out"
    with pytest.raises(MissingManifest):
        Manifest.load(out)
    parts = [segment_corpus(tmp_path / "in*.jsonl", out, STRATEGY, rank=r, world_size=2) for r in range(2)]
    assert [p.ranks for p in parts] == [[0], [1]]
    with pytest.raises(MissingManifest, match="merge"):
        Manifest.load(out)
    merged = merge(out)
    assert merged == Manifest.load(out) and merged.documents_written == 120
    assert sorted(s.path for s in merged.shards) == sorted(s.path for p in parts for s in p.shards)
    (out / "manifest.rank1-of2.json").write_text("{}")
    with pytest.raises(ManifestError, match="not a valid manifest"):
        merge(out)


def test_importing_aunet_for_preprocessing_does_not_import_torch():
    code = "import sys, aunet; aunet.Segmenter({'word1': '1@1'}); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
    assert aunet.HierarchicalTransformer.__name__ == "HierarchicalTransformer"  # the lazy names resolve
    assert {"Segmenter", "segment_corpus", "Manifest", "load_model", "Generator", "ModelArgs", "load_config"} <= set(aunet.__all__)


def test_merge_removes_the_rank_manifests_of_a_run_on_another_number_of_ranks(tmp_path):
    import os

    for i in range(3):
        write_jsonl(tmp_path / f"in{i}.jsonl", sample_texts(40, seed=i))
    out = tmp_path / "out"
    for r in range(3):
        segment_corpus(tmp_path / "in*.jsonl", out, STRATEGY, rank=r, world_size=3)
    old = out / "manifest.rank2-of3.json"
    os.utime(old, ns=(1, 1))  # written long before the rerun below
    for r in range(2):  # the same data on 2 ranks, later
        segment_corpus(tmp_path / "in*.jsonl", out, STRATEGY, rank=r, world_size=2)
    merged = merge(out)
    assert merged.world_size == 2 and merged.documents_written == 120
    assert sorted(p.name for p in out.glob("manifest.rank*")) == ["manifest.rank0-of2.json", "manifest.rank1-of2.json"]
    # Told the world size, merge keeps those and removes the others.
    assert merge(out, world_size=2) == merged
