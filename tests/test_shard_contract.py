"""Shards against the model (SPEC sections 2 and 8): the strategy list compared in order, the
depth against the pooling levels, in the trainer and in `aunet eval`; raw bytes reach `aunet
eval` unchanged."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from aunet import Segmenter, segment_corpus
from aunet.config import load_config
from aunet.data.contract import ShardMismatch, check_shards
from aunet.inference.evaluate import evaluate_model
from aunet.inference.export import load_model
from aunet.segment.strategy_order import describe_strategy, ordered_strategy, same_strategy
from helpers import REPO_ROOT
from model_helpers import export_random_model
from segment_fixtures import sample_texts, write_jsonl

FORWARD = {"pretok": "", "word": "2@1"}
REVERSED = {"word": "2@1", "pretok": ""}


def test_strategy_lists_are_compared_in_order_and_by_kind():
    assert not same_strategy(FORWARD, REVERSED)
    assert FORWARD == REVERSED  # what dict equality said, and why it could not be used
    assert same_strategy({"word1": "1@1", "word2": "2@1"}, [("word", "1@1"), ("word_2", " 2@1")])
    assert same_strategy({"pretok": "whatever"}, {"pretok2": ""})
    assert not same_strategy({"word1": "1@1"}, {"word1": "1@2"})
    assert ordered_strategy([(r"\s", None)]) == [("custom", json.dumps([r"\s", None]))]
    assert describe_strategy(FORWARD) == "[pretok, word 2@1]"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    write_jsonl(root / "a.jsonl", sample_texts(40))
    for name, strategy in [("forward", FORWARD), ("reversed", REVERSED), ("word", {"word1": "1@1"}),
                           ("aunet3", {"word1": "1@1", "word2": "2@1"})]:
        segment_corpus([root / "a.jsonl"], root / name, strategy)
    return root


def test_check_shards_refuses_another_order_or_depth_and_names_both(shards):
    check_shards([shards / "forward"], FORWARD, 2)  # the same list: fine
    with pytest.raises(ShardMismatch, match=r"\[word 2@1, pretok\].*expects \[pretok, word 2@1\].*set x=1"):
        check_shards([shards / "reversed"], FORWARD, 2, how_to_allow="set x=1")
    with pytest.raises(ShardMismatch, match=r"1 stage\(s\).*2 pooling level"):
        check_shards([shards / "word"], {"word1": "1@1", "word2": "2@1"}, 2)
    problems = check_shards([shards / "forward", shards / "reversed"], FORWARD, 2, allow=True)
    assert len(problems) == 1 and str(shards / "reversed") in problems[0]
    assert check_shards([shards / "reversed"], None, 0) == []  # a flat model reads no levels


def run_trainer(tmp_path, source, *overrides):
    cfg = REPO_ROOT / "configs" / "tiny_aunet3.yaml"
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "aunet" / "train.py"), "--config", str(cfg), f"data.root_dir={source.parent}",
         f"data.sources={{{source.name}: 1.0}}", f"dump_dir={tmp_path / 'run'}", "steps=1", "logging.freq=1",
         "checkpoint.dump.every=100", *overrides],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )


@pytest.mark.slow  # 7 s: starts the trainer in subprocesses
def test_the_trainer_refuses_shards_of_another_depth_unless_told(shards, tmp_path):
    proc = run_trainer(tmp_path, shards / "word")  # the tiny AU-Net-3 pools twice; these shards have one stage
    assert proc.returncode != 0
    assert "were segmented with strategy [word 1@1]" in proc.stderr and "data.allow_shard_mismatch=true" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    proc = run_trainer(tmp_path, shards / "word", "data.allow_shard_mismatch=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning (data.allow_shard_mismatch)" in proc.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-model")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=64"])
    export_random_model(root / "export", cfg)
    return root / "export"


def test_aunet_eval_refuses_shards_of_another_strategy_unless_told(shards, exported):
    from aunet.cli import main

    assert main(["eval", "--model", str(exported), "--data", str(shards / "aunet3"), "--max-batches", "1"]) == 0
    for wrong in ("word", "forward"):
        with pytest.raises(ShardMismatch, match="re-segment"):
            evaluate_model(exported, [str(shards / wrong)], max_batches=1)
    assert main(["eval", "--model", str(exported), "--data", str(shards / "forward"), "--max-batches", "1"]) == 1
    assert main(["eval", "--model", str(exported), "--data", str(shards / "forward"), "--max-batches", "1",
                 "--allow-shard-mismatch"]) == 0


def test_aunet_eval_scores_the_raw_bytes_of_a_text_file(tmp_path, exported):
    data = b"ab\xffcd caf\xc3\xa9 \xed\xa0\x80 end \xe6\x97"  # a stray byte, a UTF-8 surrogate, a cut character
    path = tmp_path / "doc.txt"
    path.write_bytes(data)
    report = evaluate_model(exported, [str(path)])["sources"][str(path)]
    assert report["bytes"] == len(data)  # surrogateescape + JSON made 3 bytes of each invalid one
    model, cfg = load_model(exported)
    levels = Segmenter(cfg.data.regex.strategy).levels(data, bos=True, eos=True)
    tokens = torch.tensor([[256, *data, 257]])
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1], torch.from_numpy(levels[None, :-1]).long())
    logp = logits[0].log_softmax(-1)
    nats = -sum(float(logp[p, tokens[0, p + 1]]) for p in range(len(data)))  # EOS stands for no byte
    assert report["bpb"] == pytest.approx(nats / len(data) / math.log(2), rel=1e-5)
