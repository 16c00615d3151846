"""aunet-segment under faults and hostile input (issue "Faults and bad input", items 1-9): nothing
lost, nothing twice, nothing corrupt kept. Each test failed on the code before its fix."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
import zstandard

from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import CLI, read_shards, segment

from aunet.segment.shards import Manifest


def texts_in(out: Path) -> list[bytes]:
    return [t for t, _, _ in read_shards(out)]


def same_size_texts(texts: list[str], letter: str) -> list[str]:
    """`texts` with every ASCII letter replaced by `letter`: other content, same byte length."""
    return ["".join(letter if c.isascii() and c.isalpha() else c for c in t) for t in texts]


# ---------------------------------------------------------------- 1, 2, 3: which files are inputs


def test_a_replaced_input_of_the_same_size_and_mtime_is_segmented_again(tmp_path):
    texts = {name: sample_texts(40, seed) for seed, name in enumerate("abc")}
    paths = {name: write_jsonl(tmp_path / f"{name}.jsonl", t) for name, t in texts.items()}
    out = tmp_path / "out"
    segment(*paths.values(), "--out", out, *STRATEGY_ARGS)
    st = paths["b"].stat()
    replaced = same_size_texts(texts["b"], "x")
    write_jsonl(paths["b"], replaced)
    os.utime(paths["b"], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert paths["b"].stat().st_size == st.st_size and paths["b"].stat().st_mtime_ns == st.st_mtime_ns
    rerun = segment(*paths.values(), "--out", out, *STRATEGY_ARGS)
    assert "1 processed now, 2 already done" in rerun.stdout
    expected = [t.encode() for name in "abc" for t in ({"b": replaced}.get(name) or texts[name])]
    assert texts_in(out) == expected


def test_the_same_file_given_twice_is_one_input(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    path = write_jsonl(corpus / "a.jsonl", sample_texts(30))
    (tmp_path / "link.jsonl").symlink_to(path)
    out = tmp_path / "out"
    proc = subprocess.run([CLI, "corpus/a.jsonl", str(path), "link.jsonl", "corpus", "--out", str(out), *STRATEGY_ARGS],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = Manifest.load(out)
    assert len(m.inputs) == 1 and m.documents_read == 30
    assert "3 repeated inputs (a file already listed, by another path) skipped" in proc.stdout


def test_output_directory_as_input_is_refused_and_a_manifest_is_never_emptied(tmp_path):
    out = tmp_path / "out"
    segment(write_jsonl(tmp_path / "a.jsonl", sample_texts(20)), "--out", out, *STRATEGY_ARGS)
    before = (out / "manifest.json").read_bytes()
    same = segment(out, "--out", out, *STRATEGY_ARGS, check=2)
    assert "output directory" in same.stderr
    inside = segment(out / "*.arrow", "--out", out, *STRATEGY_ARGS, check=None)
    assert inside.returncode == 2 and "no input files" in inside.stderr
    # Every document of the new input rejected: zero shards would replace a manifest with shards.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n{"no": "text"}\n')
    emptied = segment(bad, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=1)
    assert "manifest is left as it was" in emptied.stderr and str(out / "manifest.json") in emptied.stderr
    assert (out / "manifest.json").read_bytes() == before


# ---------------------------------------------------------------- 4, 8: arguments checked up front


def test_repeated_strategy_key_kept_field_names_and_infinite_sizes_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", sample_texts(5))
    out = tmp_path / "out"
    twice = segment(path, "--out", out, "--strategy", "word=1@1", "--strategy", "word=2@1", check=2)
    assert "'word' given twice" in twice.stderr
    for fields, what in [("text", "text"), ("level_mask", "level_mask"), ("row", "row"), ("id,id", "more than once")]:
        proc = segment(path, "--out", out, *STRATEGY_ARGS, "--keep-fields", fields, check=2)
        assert what in proc.stderr, proc.stderr
    for size in ("inf", "nan", "-inf"):
        proc = segment(path, "--out", out, *STRATEGY_ARGS, "--shard-size", size, check=2)
        assert "Traceback" not in proc.stderr and "size" in proc.stderr
    assert not (out / "manifest.json").exists()


# ---------------------------------------------------------------- 5: only fully read files are done


def _without_capabilities() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    capability bounding set, so that after exec even root does not bypass file permissions and a
    mode-000 file is unreadable (the tests may run as root). Without privileges there is nothing
    to drop: such a user cannot read the file anyway."""
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def segment_unprivileged(*args) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300, preexec_fn=_without_capabilities)


def test_an_unreadable_file_is_retried_by_the_next_run(tmp_path):
    good = write_jsonl(tmp_path / "a.jsonl", sample_texts(10))
    locked = write_jsonl(tmp_path / "b.jsonl", sample_texts(12, 1))
    out = tmp_path / "out"
    locked.chmod(0)
    try:
        first = segment_unprivileged(good, locked, "--out", out, *STRATEGY_ARGS, "--on-error", "skip")
    finally:
        locked.chmod(0o644)
    assert first.returncode == 3, first.stderr
    assert "unreadable" in first.stdout and "the next run reads them again" in first.stdout
    assert Manifest.load(out).documents_written == 10
    second = segment(good, locked, "--out", out, *STRATEGY_ARGS, "--on-error", "skip")
    assert "1 processed now, 1 already done" in second.stdout
    m = Manifest.load(out)
    assert (m.documents_written, m.documents_rejected) == (22, 0)


def test_a_fail_rerun_does_not_accept_the_rejects_of_a_skip_run(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 3}\n')
    out = tmp_path / "out"
    segment(path, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=3)
    strict = segment(path, "--out", out, *STRATEGY_ARGS, check=1)
    assert "line 2" in strict.stderr


# ---------------------------------------------------------------- 6, 7: corrupt inputs keep what is readable


def test_a_zstd_stream_corrupt_in_the_middle_keeps_the_documents_before_the_damage(tmp_path):
    texts = [f"document {i}: " + "Съешь же ещё этих мягких французских булок. " * (i % 7 + 1) for i in range(6000)]
    plain = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    data = bytearray(zstandard.ZstdCompressor(level=3).compress(plain))  # one frame, well under one 1 MiB read
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "damaged.jsonl.zst"
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    segment(path, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=3)
    # What decodes before the damage, fed one byte at a time: every complete line of it is kept.
    obj, decodable = zstandard.ZstdDecompressor().decompressobj(), []
    for byte in bytes(data):
        try:
            decodable.append(obj.decompress(bytes((byte,))))
        except zstandard.ZstdError:
            break
    complete_lines = b"".join(decodable).count(b"\n")
    assert 0 < complete_lines < len(texts)
    kept = texts_in(out)
    assert kept == [t.encode() for t in texts[:complete_lines]]
    rejects = (out / "rejects" / "part-000000.jsonl").read_text()
    assert f"after line {len(kept)}" in rejects and "corrupt or truncated jsonl.zst stream" in rejects


def test_an_arrow_batch_with_offsets_out_of_range_is_rejected_naming_the_file_and_rows(tmp_path):
    texts = [b"hello world", b"second doc", b"third"]
    data = pa.py_buffer(b"".join(texts))

    def column(offsets):
        return pa.Array.from_buffers(pa.binary(), 3, [None, pa.py_buffer(np.array(offsets, np.int32)), data])

    path = tmp_path / "bad.arrow"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, pa.schema([("text", pa.binary())])) as w:
        for offsets in ([0, 11, 21, 26], [0, 11, 9999, 26], [0, 11, 21, 26]):
            w.write_batch(pa.record_batch([column(offsets)], names=["text"]))
    out = tmp_path / "out"
    proc = segment(path, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=3)
    assert "Traceback" not in proc.stderr
    assert texts_in(out) == texts + texts
    (reject,) = map(json.loads, (out / "rejects" / "part-000000.jsonl").read_text().splitlines())
    assert (reject["file"], reject["location"], reject["count"]) == (str(path), "rows 3-5", 3)
    assert "corrupt Arrow data" in reject["reason"]
    strict = segment(path, "--out", tmp_path / "strict", *STRATEGY_ARGS, check=1)
    assert str(path) in strict.stderr and "rows 3-5" in strict.stderr


# ---------------------------------------------------------------- 9: a rerun checks finished shards


def test_a_rerun_with_repair_redoes_a_shard_with_a_flipped_byte(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", sample_texts(50))
    out = tmp_path / "out"
    segment(path, "--out", out, *STRATEGY_ARGS)
    shard = out / Manifest.load(out).shards[0].path
    good = shard.read_bytes()
    broken = bytearray(good)
    broken[len(broken) // 2] ^= 0xFF
    shard.write_bytes(bytes(broken))
    plain = segment(path, "--out", out, *STRATEGY_ARGS)  # sizes match: a plain rerun does not read shards
    assert "1 already done" in plain.stdout
    assert segment("verify", out, check=1).returncode == 1
    repaired = segment(path, "--out", out, *STRATEGY_ARGS, "--repair")
    assert "1 processed now, 0 already done" in repaired.stdout
    # Redone under the other generation of names (the damaged one stayed listed until then).
    shard = out / Manifest.load(out).shards[0].path
    assert shard.read_bytes() == good
    segment("verify", out, "--deep")
    truncated = segment(path, "--out", out, *STRATEGY_ARGS)
    assert "1 already done" in truncated.stdout
    shard.write_bytes(good[:-10])
    redone = segment(path, "--out", out, *STRATEGY_ARGS)
    assert "1 processed now" in redone.stdout
    assert (out / Manifest.load(out).shards[0].path).read_bytes() == good


# ---------------------------------------------------------------- third pass, item 1: publish, then delete


def listed_shards_are_whole(out: Path, manifest: Manifest) -> None:
    from aunet.segment.shards import checksum_matches

    for s in manifest.shards:
        assert (out / s.path).is_file() and checksum_matches(out / s.path, s.checksum), s.path


def test_a_failed_rerun_after_an_input_changed_leaves_the_old_manifest_whole(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", sample_texts(60, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", sample_texts(60, seed=2))
    out = tmp_path / "out"
    segment(a, b, "--out", out, *STRATEGY_ARGS)
    before = Manifest.load(out)
    write_jsonl(a, sample_texts(50, seed=3))  # a changed: its shards are redone first (index 0)
    with open(b, "a") as f:
        f.write("{not json\n")  # then b fails the run (on_error fail)
    segment(a, b, "--out", out, *STRATEGY_ARGS, check=1)
    # The manifest is the old one, and every shard it lists is there with its bytes.
    assert [(s.path, s.checksum) for s in Manifest.load(out).shards] == [(s.path, s.checksum) for s in before.shards]
    listed_shards_are_whole(out, Manifest.load(out))
    assert [t.encode() for t in sample_texts(60, seed=1)] == texts_in(out)[:60]
    # Fixed and rerun: the new shards are listed, the replaced ones are gone, nothing stray.
    write_jsonl(b, sample_texts(60, seed=2))
    segment(a, b, "--out", out, *STRATEGY_ARGS)
    after = Manifest.load(out)
    listed_shards_are_whole(out, after)
    assert texts_in(out) == [t.encode() for t in sample_texts(50, seed=3) + sample_texts(60, seed=2)]
    assert sorted(p.name for p in out.glob("part-*")) == sorted(s.path for s in after.shards)
    assert "OK" in segment("verify", out).stdout


def test_a_rerun_that_would_empty_the_manifest_deletes_none_of_its_shards(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", sample_texts(40))
    out = tmp_path / "out"
    segment(a, "--out", out, *STRATEGY_ARGS)
    before = Manifest.load(out)
    a.write_text('{"text": 1}\n{"no": "text"}\n')  # every document of the changed input rejected
    emptied = segment(a, "--out", out, *STRATEGY_ARGS, "--on-error", "skip", check=1)
    assert "manifest is left as it was" in emptied.stderr
    listed_shards_are_whole(out, before)
    assert texts_in(out) == [t.encode() for t in sample_texts(40)]


# ---------------------------------------------------------------- third pass, items 2 and 14: write errors


def test_a_full_disk_fails_with_one_line_naming_the_shard_and_leaves_no_temporary(tmp_path):
    import resource
    import signal

    path = write_jsonl(tmp_path / "a.jsonl", sample_texts(4000))
    out = tmp_path / "out"
    out.mkdir()

    def small_disk():
        # Writes past 64 KB fail with EFBIG (SIGXFSZ ignored), as a full disk fails with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run([CLI, str(path), "--out", str(out), *STRATEGY_ARGS], capture_output=True, text=True,
                          timeout=300, preexec_fn=small_disk)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out / 'part-000000-0000.arrow'}: cannot write the shard: File too large" in lines[0]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == []  # no .tmp, no shard, no manifest


def test_an_fsync_error_fails_the_file_and_publishes_nothing(tmp_path, monkeypatch):
    import errno

    import pytest

    from aunet.segment import segment_corpus
    from aunet.segment.errors import SegmentError

    path = write_jsonl(tmp_path / "a.jsonl", sample_texts(200))
    out = tmp_path / "out"

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)  # a failing device cannot be had here; its error can
    with pytest.raises(SegmentError, match=r"part-000000-0000\.arrow: cannot write the shard: Input/output error"):
        segment_corpus([path], out, {"word1": "1@1"})
    assert not list(out.glob("part-*")) and not (out / "manifest.json").exists()


# ---------------------------------------------------------------- third pass, item 10: file names


def test_an_input_name_that_is_not_utf8_is_segmented_resumed_and_inspected(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")  # Latin-1 bytes: not UTF-8, as old archives name files
    write_jsonl(corpus / name, sample_texts(20))
    out = tmp_path / "out"
    segment(corpus, "--out", out, *STRATEGY_ARGS)
    assert texts_in(out) == [t.encode() for t in sample_texts(20)]
    assert "1 already done" in segment(corpus, "--out", out, *STRATEGY_ARGS).stdout
    shown = subprocess.run([CLI, "inspect", str(out), "--limit", "1"], capture_output=True, timeout=60)
    assert shown.returncode == 0 and b"caf" in shown.stdout, shown.stderr
    assert "OK" in segment("verify", out).stdout


# ---------------------------------------------------------------- third pass, items 3, 9, 12, 17: column types


def write_table(path: Path, table: pa.Table) -> Path:
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return path


def kept_columns(out: Path, names: list[str]) -> list[tuple]:
    from aunet.segment.shards import open_shard

    rows = []
    for shard in Manifest.load(out).shards:
        t = open_shard(out / shard.path).read_all()
        rows += zip(t.column("row").to_pylist(), *(t.column(n).to_pylist() for n in names))
    return rows


def test_kept_fields_of_any_type_are_kept_or_rejected_row_by_row(tmp_path):
    table = pa.table({
        "text": ["first doc", "second doc", "third doc", "fourth doc"],
        "meta": pa.array([{"k": 1}, None, {"k": 2}, {"k": 3}]),
        "tags": pa.array([["x"], [], None, ["y", "z"]]),
        "raw": pa.array([b"ok", b"\xff\xfe", b"fine", b"also"], pa.binary()),
    })
    for suffix in (".parquet", ".arrow"):
        src = write_table(tmp_path / f"in{suffix}", table)
        out = tmp_path / f"out{suffix}"
        skipped = segment(src, "--out", out, *STRATEGY_ARGS, "--keep-fields", "meta,tags,raw", "--on-error", "skip", check=3)
        assert "Traceback" not in skipped.stderr
        # Nested values are kept as JSON text (as from JSONL); the row whose bytes are not UTF-8
        # is the one row rejected, and the rows after it are written.
        assert kept_columns(out, ["text", "meta", "tags", "raw"]) == [
            (0, b"first doc", '{"k": 1}', '["x"]', "ok"), (2, b"third doc", '{"k": 2}', None, "fine"),
            (3, b"fourth doc", '{"k": 3}', '["y", "z"]', "also")]
        m = Manifest.load(out)
        assert (m.documents_read, m.documents_written, m.documents_rejected) == (4, 3, 1)
        rejects = [json.loads(line) for line in (out / "rejects" / "part-000000.jsonl").read_text().splitlines()]
        assert [(r["location"], r["count"]) for r in rejects] == [("row 1", 1)]
        assert rejects[0]["reason"].startswith("kept field 'raw' is not valid UTF-8")
        failed = segment(src, "--out", tmp_path / f"fail{suffix}", *STRATEGY_ARGS, "--keep-fields", "raw", check=1)
        assert f"{src}: row 1: kept field 'raw' is not valid UTF-8" in failed.stderr and "Traceback" not in failed.stderr


def test_two_text_columns_of_the_same_name_are_refused_naming_the_file(tmp_path):
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array(["c", "d"])], names=["text", "text"])
    for suffix in (".parquet", ".arrow"):
        src = write_table(tmp_path / f"dup{suffix}", table)
        proc = segment(src, "--out", tmp_path / f"out{suffix}", *STRATEGY_ARGS, check=1)
        assert f"{src}: rows 0-1: columns named 'text' (2 times) appear more than once" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_dictionary_encoded_and_view_text_columns_are_text(tmp_path):
    texts = sample_texts(50)
    layouts = {"dict": pa.array(texts).dictionary_encode(), "view": pa.array(texts, pa.string_view()),
               "binview": pa.array([t.encode() for t in texts], pa.binary_view())}
    for name, column in layouts.items():
        for suffix in (".arrow", ".parquet"):
            if suffix == ".parquet" and name != "dict":
                continue  # Parquet has no view layout: it reads back as plain strings
            src = write_table(tmp_path / f"{name}{suffix}", pa.table({"text": column}))
            out = tmp_path / f"out-{name}{suffix}"
            segment(src, "--out", out, *STRATEGY_ARGS)
            assert texts_in(out) == [t.encode() for t in texts], (name, suffix)


# ---------------------------------------------------------------- third pass, item 15: verify checks what the loader checks


def test_verify_refuses_an_invalid_strategy_and_a_batch_plan_the_loader_refuses(tmp_path):
    from aunet.data import ShardSource

    out = tmp_path / "out"
    segment(write_jsonl(tmp_path / "a.jsonl", sample_texts(40)), "--out", out, *STRATEGY_ARGS)
    raw = json.loads((out / "manifest.json").read_text())
    rows, text_bytes = raw["shards"][0]["batches"][0]
    # The same totals, another cut into record batches: the loader maps batches by this plan.
    raw["shards"][0]["batches"] = [[rows - 10, text_bytes - 100], [10, 100]]
    (out / "manifest.json").write_text(json.dumps(raw))
    proc = segment("verify", out, check=1)
    assert "1 record batches, the manifest's plan lists 2" in proc.stdout
    source = ShardSource(out)
    try:
        [source.document(u, 0) for u in range(source.units)]
        raise AssertionError("the loader read a plan that verify refuses")
    except ValueError as e:
        assert "the manifest lists" in str(e)
    raw["strategy"] = {"word1": "zz"}
    (out / "manifest.json").write_text(json.dumps(raw))
    bad = segment("verify", out, check=1)
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert f"{out / 'manifest.json'}: strategy" in bad.stderr and "is not valid" in bad.stderr


# ---------------------------------------------------------------- third pass, item 11: a bound per document


@pytest.mark.slow  # the bound under test is 10 s of matching
def test_a_custom_regex_that_backtracks_at_every_position_is_bounded_per_document(tmp_path):
    from aunet.segment import segment_corpus

    # Every search backtracks through the ways of splitting a run of a's, then matches the
    # `aax` after it: each search stays under the engine's limit, the document's total does not
    # (minutes unbounded); the bound per document (10 s) rejects it instead.
    strategy = [(r"((a|aa)+)\1x", None)]
    pathological = ("a" * 28 + "yaax") * 600  # about 0.14 s a block here: 84 s unbounded
    path = write_jsonl(tmp_path / "a.jsonl", ["aax is fine", pathological, "so is this aax"])
    m = segment_corpus([path], tmp_path / "out", strategy, on_error="skip")
    assert (m.documents_written, m.documents_rejected) == (2, 1)
    (reject,) = [json.loads(line) for line in (tmp_path / "out" / "rejects" / "part-000000.jsonl").read_text().splitlines()]
    # Under on_error="fail" this reject is a BadDocument, as every reject is (tested above).
    assert reject["location"] == "line 2" and "took more than 10" in reject["reason"] and r"((a|aa)+)\\1x" in reject["reason"]
