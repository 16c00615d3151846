"""The BPE baseline's data path: tokenizer, tokenized source in the loader, bits per byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aunet.baselines.bpe import load_bpe, train_bpe
from aunet.baselines.tokenized_source import source_opener
from aunet.config import BlockArgs, ConfigError, DataArgs, ModelArgs, TokenizerArgs, load_config
from aunet.data import PackedLoader
from aunet.inference.evaluate import heldout_bpb
from aunet.model import HierarchicalTransformer, byte_nats
from helpers import REPO_ROOT
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import segment

TEXTS = sample_texts(300)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bpe")
    write_jsonl(root / "a.jsonl", TEXTS)
    segment(root / "a.jsonl", "--out", root / "shards", *STRATEGY_ARGS, "--shard-size", "4KB")
    train_bpe(TEXTS, 400, root / "bpe400.json")
    train_bpe(TEXTS, 258, root / "bpe258.json")  # the 256 bytes and the specials: no merges
    return root


def test_token_bytes_add_up_to_the_text_bytes(data):
    bpe = load_bpe(data / "bpe400.json")
    assert (bpe.bos_id, bpe.eos_id, bpe.vocab_size) == (0, 1, 400)
    docs = [t.encode() for t in TEXTS]
    encoded = bpe.encode_batch(docs)
    for doc, ids in zip(docs, encoded):
        assert int(bpe.token_bytes[ids].sum()) == len(doc)
        assert bpe.tokenizer.decode(ids.tolist()) == doc.decode()
    # Merges were learned: fewer tokens than bytes.
    assert sum(map(len, encoded)) < 0.8 * sum(map(len, docs))


def test_bad_tokenizer_files_name_the_file(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_bpe(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_bpe(tmp_path / "bad.json")
    raw = json.loads((data / "bpe400.json").read_text())
    raw["added_tokens"] = []
    raw["model"]["vocab"] = {k: v for k, v in raw["model"]["vocab"].items() if k not in ("<bos>", "<eos>")}
    (tmp_path / "nospecial.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="nospecial.json.*<bos>"):
        load_bpe(tmp_path / "nospecial.json")


def test_loader_reads_token_ids_with_exact_resume(data):
    bpe = load_bpe(data / "bpe400.json")
    args = DataArgs(sources={str(data / "shards"): 1.0}, seq_len=48, batch_size=2, load_async=False,
                    tokenizer=TokenizerArgs("bpe", str(data / "bpe400.json")))
    opener = source_opener(args.tokenizer.bpe_file)
    loader = PackedLoader(args, open_source=opener)
    batches = [next(loader) for _ in range(5)]
    for b in batches:
        assert int(b["tokens"].max()) < 400 and int(b["levels"].max()) == 0
        assert torch.equal(b["target_bytes"], torch.from_numpy(bpe.token_bytes)[b["targets"]])
    assert any((b["tokens"] == bpe.bos_id).any() for b in batches) and any((b["tokens"] == bpe.eos_id).any() for b in batches)
    state = loader.state_dict()
    following = [next(loader) for _ in range(3)]
    restored = PackedLoader(args, open_source=opener)
    restored.load_state_dict(json.loads(json.dumps(state)))
    for a, b in zip(following, [next(restored) for _ in range(3)]):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_byte_nats_counts_the_bytes_each_target_stands_for():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 10)
    targets = torch.tensor([[3, 1, 4, -100, 5], [0, 2, 6, 7, 8]])
    target_bytes = torch.tensor([[2, 0, 3, 0, 1], [0, 4, 1, 1, 2]])
    nats, count = byte_nats(logits, targets, target_bytes)
    lp = logits.log_softmax(-1)
    keep = [(b, t) for b in range(2) for t in range(5) if targets[b, t] >= 0 and target_bytes[b, t] > 0]
    assert float(nats) == pytest.approx(-sum(float(lp[b, t, targets[b, t]]) for b, t in keep), rel=1e-6)
    assert int(count) == sum(int(target_bytes[b, t]) for b, t in keep)
    # Without target_bytes, ids are bytes: 256/257 (BOS/EOS) and -100 do not count.
    nats, count = byte_nats(torch.randn(1, 4, 258), torch.tensor([[65, 256, 257, -100]]))
    assert int(count) == 1


def gpt2_byte_chars() -> dict[int, str]:
    """The byte -> character map of byte-level BPE (printable Latin-1 bytes stand for
    themselves, the rest are moved to code points 256 and up, in byte order)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


@pytest.mark.slow  # 8 s: trains a tokenizer and runs aunet eval in subprocesses
def test_a_merge_free_bpe_model_scores_exactly_like_the_byte_model(data):
    """With no merges, BPE tokens are bytes under another numbering: a flat model whose
    embedding and output rows are permuted to match must give the same held-out bpb, which
    checks the tokenized source, packing and the byte accounting end to end."""
    bpe = load_bpe(data / "bpe258.json")
    assert bpe.vocab_size == 258
    ids = {b: bpe.tokenizer.token_to_id(c) for b, c in gpt2_byte_chars().items()}
    ids[256], ids[257] = bpe.bos_id, bpe.eos_id
    assert sorted(ids.values()) == list(range(258))
    args = ModelArgs(dimensions=[32], layers=[2], head_dims=[16], sliding_windows=[64], max_seqlens=[-1],
                     block=BlockArgs(multiple_of=16, rope_theta=10000.0))
    torch.manual_seed(0)
    byte_model = HierarchicalTransformer(args).eval()
    bpe_model = HierarchicalTransformer(args).eval()
    perm = torch.tensor([ids[i] for i in range(258)])
    state = byte_model.state_dict()
    for name in ("tok_embeddings.weight", "vocab.weight"):
        permuted = torch.empty_like(state[name])
        permuted[perm] = state[name]
        state = {**state, name: permuted}
    bpe_model.load_state_dict(state)
    source = {str(data / "shards"): 1.0}
    as_bytes = heldout_bpb(byte_model, source, seq_len=64, batch_size=4, max_batches=None)
    as_bpe = heldout_bpb(bpe_model, source, seq_len=64, batch_size=4, max_batches=None, tokenizer=str(data / "bpe258.json"))
    assert as_bpe["bytes"] == as_bytes["bytes"] > 1000
    assert as_bpe["bpb"] == pytest.approx(as_bytes["bpb"], rel=1e-5)
    assert math.isfinite(as_bpe["bpb"])


def test_config_rules_for_the_bpe_tokenizer():
    base = ["model.dimensions=[64]", "model.layers=[2]", "model.head_dims=[32]", "model.residuals=[]",
            "model.sliding_windows=[128]", "model.max_seqlens=[-1]", "data.regex=null"]
    with pytest.raises(ConfigError, match="data.tokenizer.path"):
        load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", [*base, "data.tokenizer.name=bpe"])
    with pytest.raises(ConfigError, match="data.tokenizer.name"):
        load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.tokenizer.name=sentencepiece"])
    with pytest.raises(ConfigError, match="flat transformer"):
        load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.tokenizer.name=bpe", "data.tokenizer.path=x.json", "model.vocab_size=400"])
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", [*base, "data.tokenizer.name=bpe", "data.tokenizer.path=x.json", "model.vocab_size=400"])
    assert cfg.model.n_levels == 0 and cfg.model.vocab_size == 400


def test_tokenized_source_lengths_agree(data):
    from aunet.baselines.tokenized_source import TokenizedSource
    from aunet.data import ShardSource

    src = TokenizedSource(ShardSource(data / "shards"), load_bpe(data / "bpe400.json"))
    tokens, levels = src.document(0, 0)
    assert tokens.dtype == np.int64 and levels.dtype == np.uint8 and len(tokens) == len(levels) == src.length(0, 0)
    assert src.documents == len(TEXTS) and src.total_tokens == sum(src.length(u, r) for u in range(src.units) for r in range(src.unit_rows[u]))


@pytest.mark.slow  # 5 s: the aunet CLI in subprocesses
def test_aunet_eval_scores_a_bpe_export_and_generate_refuses_it(data, tmp_path):
    import subprocess

    from helpers import venv_script
    from model_helpers import export_random_model

    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", [
        "model.dimensions=[32]", "model.layers=[1]", "model.head_dims=[16]", "model.residuals=[]",
        "model.sliding_windows=[64]", "model.max_seqlens=[-1]", "model.vocab_size=400", "data.regex=null",
        "data.seq_len=64", "data.tokenizer.name=bpe", f"data.tokenizer.path={data / 'bpe400.json'}"])
    model = export_random_model(tmp_path, cfg).eval()
    proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(tmp_path), "--data", str(data / "shards"), "--batch-size", "4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["overall"]
    direct = heldout_bpb(model, {str(data / "shards"): 1.0}, 64, 4, None, tokenizer=str(data / "bpe400.json"))
    assert got["bytes"] == direct["bytes"] and got["bpb"] == pytest.approx(direct["bpb"], rel=1e-6)
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", str(tmp_path), "--prompt", "x"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "byte-level models" in proc.stderr


def test_invalid_utf8_is_reported_not_hidden(tmp_path, data):
    from aunet.data import ShardSource
    from aunet.baselines.tokenized_source import TokenizedSource

    # An Arrow input with a binary text column carries the invalid bytes into the shards.
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = pa.table({"text": pa.array([b"ok text", b"bad \xff\xfe bytes", b"more"], pa.large_binary())})
    with ipc.new_file(str(tmp_path / "docs.arrow"), table.schema) as w:
        w.write_table(table)
    segment(tmp_path / "docs.arrow", "--out", tmp_path / "shards", *STRATEGY_ARGS)
    with pytest.warns(UserWarning, match=r"1 documents are not valid UTF-8 \(first: unit 0, row 1\)"):
        TokenizedSource(ShardSource(tmp_path / "shards"), load_bpe(data / "bpe400.json"))
