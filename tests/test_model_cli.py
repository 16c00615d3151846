"""`aunet eval` and `aunet generate` on an exported model (made here from a random init)."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from aunet.config import load_config
from aunet.inference.export import load_model
from aunet.inference.generate import Generator, decode_utf8
from aunet.model import byte_nats
from model_helpers import export_random_model
from greedy import agreed_length
from helpers import REPO_ROOT, venv_script
from segment_fixtures import STRATEGY_ARGS, sample_texts, write_jsonl
from segment_fixtures import segment

# Slow tier: the aunet CLI in subprocesses on a segmented, exported corpus, 31 s in all
# (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-cli")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=256"])
    export_random_model(root / "export", cfg)
    write_jsonl(root / "a.jsonl", sample_texts(300))
    segment(root / "a.jsonl", "--out", root / "shards", *STRATEGY_ARGS)
    return root


def manifest_stream(shards) -> tuple[list[int], list[int]]:
    """[BOS] + bytes + [EOS] of every document in manifest order, and their levels."""
    from aunet.data import ShardSource

    src = ShardSource(shards)
    tokens, levels = [], []
    for unit in range(src.units):
        for row in range(src.unit_rows[unit]):
            text, mask = src.document(unit, row)
            tokens += [256, *text.tolist(), 257]
            levels += [src.depth, *mask.tolist(), 0]
    return tokens, levels


def test_eval_bpb_equals_the_training_loss_computation(exported):
    out = exported / "eval.json"
    proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(exported / "export"), "--data", str(exported / "shards"),
                           "--max-batches", "3", "--batch-size", "2", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout) == report  # one process's report, printed and written: exact
    model, cfg = load_model(exported / "export")
    # The first 6 windows of the held-out stream, overlapping by one token, as training packs them.
    S = cfg.data.seq_len
    tokens, levels = manifest_stream(exported / "shards")
    windows = torch.tensor([tokens[k * S: k * S + S + 1] for k in range(6)])
    window_levels = torch.tensor([levels[k * S: k * S + S + 1] for k in range(6)])
    with torch.no_grad():
        logits, _ = model(windows[:, :-1], window_levels[:, :-1])
        nats, count = byte_nats(logits, windows[:, 1:])
    expected = float(nats) / float(count) / math.log(2)
    got = report["sources"][str(exported / "shards")]["bpb"]
    assert abs(got - expected) < 1e-6 * expected
    assert report["overall"]["bytes"] == int(count)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_heldout_bpb_scores_every_byte_exactly_once(exported, world):
    from aunet.data import ShardSource
    from aunet.inference.evaluate import heldout_bpb

    model, cfg = load_model(exported / "export")
    src = ShardSource(exported / "shards")
    text_bytes = sum(s.text_bytes for s in src.manifest.shards)
    results = [heldout_bpb(model, {str(exported / "shards"): 1.0}, 96, 3, None, rank=r, world_size=world) for r in range(world)]
    assert sum(r["bytes"] for r in results) == text_bytes
    if world == 1:
        # One window at a time over the whole stream, the last one partial: the same nats.
        tokens, levels = manifest_stream(exported / "shards")
        nats = 0.0
        with torch.no_grad():
            for start in range(0, len(tokens) - 1, 96):
                w = torch.tensor([tokens[start: start + 97]])
                lv = torch.tensor([levels[start: start + 97]])
                n, _ = byte_nats(model(w[:, :-1], lv[:, :-1])[0], w[:, 1:])
                nats += float(n)
        assert results[0]["bpb"] == pytest.approx(nats / text_bytes / math.log(2), rel=1e-5)


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
    gen = Generator(model, cfg.data.regex.strategy)
    (expected,) = gen.generate([b"The cat"], max_bytes=24, temperature=0)
    # Another process (same shapes and code): exact text, as long as no step of the path is a
    # near tie of the top two logits (tests/greedy.py).
    assert agreed_length(gen, b"The cat", expected) == len(expected), "a near tie on this greedy path: pick another prompt"
    assert proc.stdout == "The cat" + expected.decode("utf-8", "replace") + "\n"


def test_generate_cli_chunk_changes_when_bytes_are_read_not_which(exported):
    """--chunk sets how often the host reads the output; the sampled bytes are the same (the same
    arithmetic in both runs: exact). A chunk of 0 is refused at parse time."""
    def run(*extra):
        return subprocess.run([venv_script("aunet"), "generate", "--model", str(exported / "export"), "--prompt", "Once",
                               "--max-bytes", "20", "--temperature", "0.9", "--seed", "3", *extra],
                              capture_output=True, text=True)

    one, whole = run("--chunk", "1"), run("--chunk", "64")
    assert one.returncode == whole.returncode == 0, one.stderr[-2000:] + whole.stderr[-2000:]
    assert one.stdout == whole.stdout and one.stdout.startswith("Once")
    bad = run("--chunk", "0")
    assert bad.returncode == 2 and "--chunk" in bad.stderr


def test_generate_cli_runs_several_prompts_as_one_batch_in_order(exported, tmp_path):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('"def f(x):\\n"\n\n"Кошка"\n')
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", str(exported / "export"), "--prompt", "The cat",
                           "--prompts-file", str(prompts_file), "--batch-size", "2", "--max-bytes", "16",
                           "--temperature", "0.9", "--seed", "4"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    prompts = ["The cat", "def f(x):\n", "Кошка"]
    assert [r["prompt"] for r in rows] == prompts
    model, cfg = load_model(exported / "export")
    for r in rows:
        (alone,) = Generator(model, cfg.data.regex.strategy).generate([r["prompt"].encode()], 16, temperature=0.9, seed=4)
        # A batch of 2 against a prompt alone moves the logits by about 1e-6: a draw changes only
        # if its uniform number falls that close to a boundary of the cumulative distribution
        # (about one chance in 1e6 per byte), so the sampled text compares exactly.
        assert r["generated"] == decode_utf8(alone)
    prompts_file.write_text('"ok"\n{"text": "not a string"}\n')
    bad = subprocess.run([venv_script("aunet"), "generate", "--model", str(exported / "export"),
                          "--prompts-file", str(prompts_file)], capture_output=True, text=True)
    assert bad.returncode == 1 and f"{prompts_file}, line 2: expected a JSON string" in bad.stderr


def test_inference_commands_take_a_device_and_a_dtype(exported, tmp_path):
    """--device and --dtype place the model (default: the GPU when there is one, in the config's
    dtype; this machine has none, so the CPU in fp32); a GPU asked for where there is none is a
    one-line error, not a crash after loading."""
    model_dir = str(exported / "export")
    bf16 = subprocess.run([venv_script("aunet"), "generate", "--model", model_dir, "--prompt", "The cat", "--max-bytes", "8",
                           "--temperature", "0", "--device", "cpu", "--dtype", "bf16"], capture_output=True, text=True)
    assert bf16.returncode == 0 and bf16.stdout.startswith("The cat"), bf16.stderr[-2000:]
    (tmp_path / "notes.txt").write_text("The cat sat on the mat. " * 20)
    scored = subprocess.run([venv_script("aunet"), "eval", "--model", model_dir, "--data", str(tmp_path / "notes.txt"),
                             "--device", "cpu", "--dtype", "fp32"], capture_output=True, text=True)
    assert scored.returncode == 0 and json.loads(scored.stdout)["overall"]["bytes"] > 0, scored.stderr[-2000:]
    if not torch.cuda.is_available():
        for command in (["generate", "--prompt", "x"], ["eval", "--data", str(tmp_path / "notes.txt")]):
            proc = subprocess.run([venv_script("aunet"), *command, "--model", model_dir, "--device", "cuda"],
                                  capture_output=True, text=True)
            assert proc.returncode == 1 and "no CUDA GPU is available" in proc.stderr and "Traceback" not in proc.stderr
    from aunet.inference.placement import pick_device, pick_dtype

    assert pick_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype(torch.device("cuda"), "bf16") == torch.bfloat16 and pick_dtype(torch.device("cpu"), "bf16") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16", "float16") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "bf16", "int8")


def test_prompts_are_the_bytes_given_and_lone_surrogates_do_not_lose_the_output(exported, tmp_path):
    """Issue 29 items 5 and 8, and --stop checked at parse time."""
    model_dir = str(exported / "export")
    raw = b"caf\xe9 \xff the"  # not UTF-8, as a shell passes it
    (tmp_path / "prompt.bin").write_bytes(raw)
    common = [venv_script("aunet").encode(), b"generate", b"--model", model_dir.encode(), b"--max-bytes", b"12", b"--temperature", b"0"]
    argv = subprocess.run([*common, b"--prompt", raw], capture_output=True)
    from_file = subprocess.run([*common, b"--prompt-file", str(tmp_path / "prompt.bin").encode()], capture_output=True)
    assert argv.returncode == 0 and from_file.returncode == 0, argv.stderr[-2000:]
    assert argv.stdout == from_file.stdout  # the same prompt, shapes and code, so the same greedy bytes
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"lone \\ud800 surrogate"\n"The cat"\n')
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", model_dir, "--prompts-file", str(prompts),
                           "--max-bytes", "8", "--temperature", "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["lone \ud800 surrogate", "The cat"] and all(r["generated"] for r in rows)
    empty_stop = subprocess.run([venv_script("aunet"), "generate", "--model", str(tmp_path / "nothing"), "--stop", ""],
                                capture_output=True, text=True)
    assert empty_stop.returncode == 2 and "--stop: a stop string needs at least one byte" in empty_stop.stderr


def test_damaged_model_directories_fail_in_one_line_naming_the_file(exported, tmp_path):
    """Issue 29 item 16: a weight of another shape, a truncated safetensors file, a config that
    is not JSON, not UTF-8 or not YAML."""
    import re
    import shutil

    import safetensors.torch

    src = exported / "export"

    def variant(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    def fails(directory: Path, text: str) -> None:
        with pytest.raises(ValueError, match=re.escape(text)):
            load_model(directory)

    shape = variant("shape")
    tensors = safetensors.torch.load_file(str(shape / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("wqkv.weight"))
    tensors[key] = tensors[key][:-4].contiguous()
    safetensors.torch.save_file(tensors, str(shape / "model.safetensors"))
    fails(shape, f"{shape / 'model.safetensors'}: 1 weights have another shape than the config's model: {key}")

    truncated = variant("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails(truncated, f"{truncated / 'model.safetensors'}: not a readable safetensors file")
    # The command says it in one line, without a traceback.
    proc = subprocess.run([venv_script("aunet"), "generate", "--model", str(truncated), "--prompt", "x", "--max-bytes", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "not a readable safetensors file" in proc.stderr

    bad_yaml = variant("yaml")
    (bad_yaml / "config.yaml").write_text("model: [unclosed\n")
    fails(bad_yaml, f"{bad_yaml / 'config.yaml'}: not valid YAML")
    latin = variant("latin1")
    (latin / "config.yaml").write_bytes(b"name: caf\xe9\n")
    fails(latin, f"{latin / 'config.yaml'}: not UTF-8 text")

    hf = variant("hf")
    (hf / "config.yaml").unlink()
    (hf / "config.json").write_text("{not json")
    fails(hf, f"{hf / 'config.json'}: cannot read")
    (hf / "config.json").write_bytes(b'{"model_type": "aunet", "x": "\xff"}')
    fails(hf, f"{hf / 'config.json'}: not UTF-8 text")
