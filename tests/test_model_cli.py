"""`aunet eval` and `aunet generate` on an exported model (made here from a random init)."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch
import yaml
from safetensors.torch import save_file

from aunet.config import load_config, to_dict
from aunet.data import LoaderArgs, PackedLoader
from aunet.export import load_model
from aunet.generate import Generator
from aunet.model import HierarchicalTransformer, byte_nats
from helpers import REPO_ROOT, venv_script
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from test_segment_cli import segment


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-cli")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=256"])
    torch.manual_seed(0)
    model = HierarchicalTransformer(cfg.model)
    (root / "export").mkdir()
    save_file(model.state_dict(), str(root / "export" / "model.safetensors"))
    (root / "export" / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    write_jsonl(root / "a.jsonl", sample_texts(300))
    segment(root / "a.jsonl", "--out", root / "shards", *STRATEGY_ARGS)
    return root


def test_eval_bpb_equals_the_training_loss_computation(exported):
    out = exported / "eval.json"
    proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(exported / "export"), "--data", str(exported / "shards"),
                           "--max-batches", "3", "--batch-size", "2", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report
    model, cfg = load_model(exported / "export")
    loader = PackedLoader(LoaderArgs({str(exported / "shards"): 1.0}, seq_len=cfg.data.seq_len, batch_size=2, shuffle_buffer=1, prefetch=0, seed=0))
    nats = count = 0.0
    with torch.no_grad():
        for _ in range(3):
            batch = next(loader)
            n, c = byte_nats(model(batch["tokens"], batch["levels"])[0], batch["targets"])
            nats, count = nats + float(n), count + float(c)
    expected = nats / count / math.log(2)
    got = report["sources"][str(exported / "shards")]["bpb"]
    assert abs(got - expected) < 1e-9 * expected
    assert report["overall"]["bytes"] == int(count)


def test_eval_accepts_raw_text_files(exported, tmp_path):
    (tmp_path / "notes.txt").write_text("The cat sat on the mat. " * 60)
    proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(exported / "export"), "--data", str(tmp_path / "notes.txt"),
                           "--batch-size", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["overall"]["bytes"] > 0


def test_generate_cli_streams_what_the_generator_produces(exported):
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", str(exported / "export"), "--prompt", "The cat",
                           "--max-bytes", "24", "--temperature", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, cfg = load_model(exported / "export")
    (expected,) = Generator(model, cfg.data.regex.strategy).generate([b"The cat"], max_bytes=24, temperature=0)
    assert proc.stdout == "The cat" + expected.decode("utf-8", "replace") + "\n"
