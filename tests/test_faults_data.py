"""Damaged shards stop the loader with the shard's path (and record batch and row) instead of
being trained on: a level above the strategy's depth or a mask of the wrong length (always
checked, when a record batch is mapped), a size that is not the manifest's (when a shard is
opened), a byte flipped in place (its checksum, with `data.verify_shards`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from aunet import segment_corpus
from aunet.config import load_config
from aunet.config import DataArgs
from aunet.data import PackedLoader
from aunet.segment.shards import file_checksum, open_shard
from helpers import REPO_ROOT
from segment_fixtures import STRATEGY, read_all, sample_texts, write_jsonl


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-data")
    write_jsonl(root / "a.jsonl", sample_texts(400))
    segment_corpus(root / "a.jsonl", root / "shards", STRATEGY, shard_size=20_000)
    return root / "shards"


def damaged_copy(shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the shard directory and its first shard's path."""
    out = tmp_path / "shards"
    shutil.copytree(shards, out)
    first = json.loads((out / "manifest.json").read_text())["shards"][0]["path"]
    return out, out / first


def rewrite_row(directory: Path, shard: Path, mask: bytes, batch: int = 0, row: int = 1) -> None:
    """Give one row of `shard` another level mask, keeping the record batches, the schema
    metadata and a manifest that matches the new file (so only the mask is wrong)."""
    reader = open_shard(shard)
    batches = [reader.get_batch(b) for b in range(reader.num_record_batches)]
    masks = batches[batch].column("level_mask").to_pylist()
    masks[row] = mask
    columns = [pa.array(masks, pa.large_binary()) if name == "level_mask" else batches[batch].column(name)
               for name in batches[batch].schema.names]
    batches[batch] = pa.record_batch(columns, schema=batches[batch].schema)
    new = shard.with_name(shard.name + ".new")  # the batches still map the old file
    with pa.ipc.new_file(str(new), batches[0].schema) as writer:
        for b in batches:
            writer.write_batch(b)
    new.replace(shard)
    manifest = json.loads((directory / "manifest.json").read_text())
    for info in manifest["shards"]:
        if directory / info["path"] == shard:
            info["file_bytes"], info["checksum"] = shard.stat().st_size, file_checksum(shard)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def row_text(shard: Path, batch: int = 0, row: int = 1) -> bytes:
    return open_shard(shard).get_batch(batch).column("text")[row].as_py()


def test_a_level_above_the_strategy_depth_names_shard_batch_and_row(shards, tmp_path):
    directory, shard = damaged_copy(shards, tmp_path)
    text = row_text(shard)
    rewrite_row(directory, shard, bytes([0] * 5 + [len(STRATEGY) + 1] + [0] * (len(text) - 6)))
    with pytest.raises(ValueError, match=rf"shard {shard}, record batch 0, row 1: level 3 at byte 5, above the strategy's depth 2"):
        read_all(directory)


def test_a_mask_shorter_than_its_text_names_the_row(shards, tmp_path):
    directory, shard = damaged_copy(shards, tmp_path)
    text = row_text(shard)
    rewrite_row(directory, shard, bytes(len(text) - 1))
    with pytest.raises(ValueError, match=rf"shard {shard}, record batch 0, row 1: the level mask has {len(text) - 1} bytes "
                                         rf"for {len(text)} bytes of text"):
        read_all(directory)


def test_a_shard_of_another_size_is_refused_when_opened(shards, tmp_path):
    directory, shard = damaged_copy(shards, tmp_path)
    size = shard.stat().st_size
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["shards"][0]["file_bytes"] = size + 8  # e.g. a shard replaced by a rerun after the manifest was read
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"shard {shard} has {size} bytes, the manifest lists {size + 8}"):
        read_all(directory)


def test_a_byte_flipped_in_place_is_caught_by_verify_shards(shards, tmp_path):
    directory, shard = damaged_copy(shards, tmp_path)
    data = bytearray(shard.read_bytes())
    text = row_text(shard)
    at = data.find(text[:40])
    assert at > 0
    data[at] ^= 0x20  # a letter's case: still a readable shard, with the manifest's size
    shard.write_bytes(bytes(data))
    read_all(directory)  # the cheap checks cannot see it (the documented cost of leaving it off) ...
    with pytest.raises(ValueError, match=rf"shard {shard} has checksum xxh3_128:[0-9a-f]{{32}}, the manifest lists xxh3_128:.*data.verify_shards"):
        read_all(directory, verify=True)  # ... the checksum does
    read_all(shards, verify=True)  # an intact directory passes


def test_verify_shards_is_a_typed_config_key():
    cfg, unused = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.verify_shards=true"])
    assert cfg.data.verify_shards is True and "data.verify_shards" not in unused


def test_a_rank_whose_share_is_only_empty_documents_fails_instead_of_spinning(tmp_path):
    """Issue 29 item 7: with BOS and EOS off, empty documents give no token; a rank whose whole
    share is empty (while the directory as a whole is not) used to loop for ever."""
    import threading

    path = write_jsonl(tmp_path / "a.jsonl", [""] * 300 + ["x" * 40] * 3)
    out = tmp_path / "shards"
    segment_corpus([path], out, STRATEGY)
    errors = {}

    def first_batch(rank: int) -> None:
        data = DataArgs(sources={str(out): 1.0}, seq_len=16, batch_size=1, load_async=False, add_bos=False, add_eos=False)
        try:
            next(PackedLoader(data, rank, 2))
            errors[rank] = None
        except ValueError as e:
            errors[rank] = str(e)

    threads = [threading.Thread(target=first_batch, args=(r,), daemon=True) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a loader is still looking for a token"
    assert errors[1] is None  # the rank with text trains
    assert f"data source {out}: every document of rank 0's share" in errors[0] and "BOS/EOS are off" in errors[0]


def test_a_loader_state_is_refused_on_other_shards_naming_the_source(tmp_path):
    """Issue 29 item 4: the same documents segmented again with another shard size are other
    (record batch, row) numbers; a state saved on the first must not 'resume' on the second."""
    path = write_jsonl(tmp_path / "a.jsonl", sample_texts(400))
    out = tmp_path / "shards"
    segment_corpus([path], out, STRATEGY, shard_size="4KB")
    data = DataArgs(sources={str(out): 1.0}, seq_len=64, batch_size=2, load_async=False)
    loader = PackedLoader(data)
    for _ in range(3):
        next(loader)
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint stores it
    again = PackedLoader(data)
    again.load_state_dict(state)  # the same shards: accepted
    shutil.rmtree(out)
    segment_corpus([path], out, STRATEGY, shard_size="16KB")
    with pytest.raises(ValueError, match=rf"^loader state is for other shards in {out}: the manifest's shard list"):
        PackedLoader(data).load_state_dict(state)
