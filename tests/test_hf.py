"""`aunet export --format hf`: the directory loads with transformers' Auto classes offline; its
logits, greedy generation and batching equal aunet's; sampling draws from aunet's distribution;
the byte tokenizer never fails to decode; and the directory goes back into aunet (load_model,
`aunet generate`, `checkpoint.init_ckpt_path` for continued training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from greedy import agreed_length, assert_same_greedy
from helpers import REPO_ROOT, cpu_dist_env, venv_script
from train_run import CONFIG, overrides, run

# Slow tier: transformers loads and generates, subprocesses, the oldest-transformers overlay:
# 41 s in all on the 2-core machine (2026-12-05), plus a training run (marked distributed).
pytestmark = pytest.mark.slow


PROMPTS = [b"The cat sat on the mat and", b"def f(x):\n    return"]
DEPTHS = {
    1: dict(dimensions=[32, 48], layers=[1, 1], head_dims=[16, 16], sliding_windows=[64, -1], max_seqlens=[-1, -1],
            residuals=[True]),
    2: None,  # configs/tiny_aunet3.yaml as it is (windows and per-stage limits included)
    3: dict(dimensions=[32, 48, 64, 64], layers=[1, 1, 1, 1], head_dims=[16, 16, 16, 16], sliding_windows=[-1, -1, -1, -1],
            max_seqlens=[-1, -1, -1, -1], residuals=[True, True, True]),
}
STRATEGIES = {1: {"word1": "1@1"}, 2: {"word1": "1@1", "word2": "2@1"}, 3: {"word1": "1@1", "word2": "2@1", "word3": "4@1"}}


def write_export(out: Path, config: dict, seed: int = 0) -> Path:
    """An `aunet export` directory with random weights for `config` (a training config mapping)."""
    from safetensors.torch import save_file

    from aunet.config import config_from_dict, to_dict
    from aunet.model import HierarchicalTransformer

    cfg, _ = config_from_dict(config)
    torch.manual_seed(seed)
    model = HierarchicalTransformer(cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
              metadata={"step": "0", "format": "aunet"})
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return out


def tiny_config(depth: int) -> dict:
    raw = yaml.safe_load(Path(CONFIG).read_text())
    if DEPTHS[depth] is not None:
        raw["model"].update(DEPTHS[depth])
    raw["data"]["regex"]["strategy"] = STRATEGIES[depth]
    return raw


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[int, tuple[Path, Path]]:
    """(aunet export, hf export made from it by the CLI) for 1, 2 and 3 pooling levels."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for depth in DEPTHS:
        export = write_export(root / f"export{depth}", tiny_config(depth), seed=depth)
        proc = subprocess.run([venv_script("aunet"), "export", "--model", str(export), "--out", str(root / f"hf{depth}"),
                               "--format", "hf"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[depth] = (export, root / f"hf{depth}")
    return out


def load_hf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval(),
            AutoTokenizer.from_pretrained(path, trust_remote_code=True))


def aunet_side(export: Path):
    from aunet.inference.export import load_model
    from aunet.inference.generate import Generator

    model, cfg = load_model(export)
    return model, cfg, Generator(model, cfg.data.regex.strategy)


def test_auto_classes_load_the_export_offline(dirs):
    from transformers import AutoConfig

    export, hf = dirs[2]
    names = {p.name for p in hf.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", "README.md",
            "configuration_aunet.py", "modeling_aunet.py", "tokenization_aunet.py"} <= names
    config = AutoConfig.from_pretrained(hf, trust_remote_code=True)
    assert type(config).__name__ == "AUNetConfig"
    assert config.aunet_strategy == [["word1", "1@1"], ["word2", "2@1"]]  # stage order kept
    assert config.aunet_model["dimensions"] == [48, 64, 96]
    model, tok = load_hf(hf)
    assert type(model).__name__ == "AUNetForCausalLM" and type(tok).__name__ == "AUNetTokenizer"
    ref, _, _ = aunet_side(export)
    ours = model.state_dict()
    assert ours.keys() == ref.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in ref.state_dict().items())  # stored weights, copied: exact
    card = (hf / "README.md").read_text()
    assert "pip install aunet" in card and "[word 1@1, word 2@1]" in card and "held-out" in card


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_logits_equal_aunet_forward(dirs, depth):
    from aunet.segment import Segmenter

    export, hf = dirs[depth]
    model, tok = load_hf(hf)
    ref, cfg, _ = aunet_side(export)
    seg = Segmenter(cfg.data.regex.strategy)
    text = "Levels are computed inside: naïve café, 12,345 items.\n    return x\n"
    enc = tok(text, return_tensors="pt")
    levels = torch.from_numpy(seg.levels(text.encode(), bos=True).astype("int64"))[None]
    with torch.no_grad():
        want = ref(enc["input_ids"], levels)[0]
        got = model(**enc).logits
    assert got.shape == want.shape == (1, len(text.encode()) + 1, 258)
    assert (got - want).abs().max().item() <= 1e-5
    # labels are shifted inside, as for any transformers causal LM: aunet's loss on next bytes.
    targets = torch.cat([enc["input_ids"][:, 1:], torch.full((1, 1), -100)], dim=1)
    with torch.no_grad():
        want_loss = ref(enc["input_ids"], levels, targets=targets)[1]
        got_loss = model(**enc, labels=enc["input_ids"]).loss
    assert abs(got_loss.item() - want_loss.item()) <= 1e-5


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_logits_equal_each_row_alone(dirs, side):
    _, hf = dirs[2]
    model, tok = load_hf(hf)
    tok.padding_side = side
    texts = [p.decode() for p in PROMPTS]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        batch = model(**enc).logits
        for b, text in enumerate(texts):
            alone = model(**tok(text, return_tensors="pt")).logits[0]
            real = enc["attention_mask"][b].bool()
            # 1e-5: a padded batch and a row alone run matmuls of different shapes, which the
            # CPU kernels block and sum in different orders (seen: 7.8801e-02 against 7.8800e-02
            # under load); a wrong row or a position from the padding differs by far more.
            assert (batch[b, real] - alone).abs().max().item() <= 1e-5
            # logits[:, -1] predicts each row's next byte, with right padding too.
            assert (batch[b, -1] - alone[-1]).abs().max().item() <= 1e-5


def hf_greedy(model, tok, prompts: list[bytes], n: int, side: str = "left", **kw) -> list[bytes]:
    tok.padding_side = side
    enc = tok([p.decode() for p in prompts], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, suppress_tokens=[256, 257], **kw)
    return [bytes(row[enc["input_ids"].shape[1]:].tolist()) for row in out]


def test_greedy_generate_equals_aunet_generate_cli(dirs):
    from aunet.inference.generate import decode_utf8

    export, hf = dirs[2]
    model, tok = load_hf(hf)
    _, _, gen = aunet_side(export)
    ours = hf_greedy(model, tok, PROMPTS, 48)
    # Another process, another code path, a padded batch: equal text up to a near tie of the
    # top two logits, if the path has one (see tests/greedy.py); the CLI prints decoded text.
    agreed = [agreed_length(gen, p, o) for p, o in zip(PROMPTS, ours)]
    for source in (export, hf):  # the hf directory is also a --model for aunet generate
        cmd = [venv_script("aunet"), "generate", "--model", str(source), "--temperature", "0", "--max-bytes", "48"]
        for p in PROMPTS:
            cmd += ["--prompt", p.decode()]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(lines) == len(PROMPTS)
        for r, o, n in zip(lines, ours, agreed):
            if n == len(o):
                assert r["generated"] == decode_utf8(o)
            else:
                assert r["generated"].startswith(decode_utf8(o[:n])), (n, r["generated"], o)


@pytest.mark.parametrize("depth", [1, 3])
def test_greedy_generate_equals_aunet_generator(dirs, depth):
    export, hf = dirs[depth]
    model, tok = load_hf(hf)
    _, _, gen = aunet_side(export)
    theirs, ours = hf_greedy(model, tok, PROMPTS, 40), gen.generate(PROMPTS, 40, temperature=0)
    assert len(theirs) == len(ours) == len(PROMPTS)
    for p, a, b in zip(PROMPTS, theirs, ours):  # other code, other padding: see tests/greedy.py
        assert_same_greedy(a, b, gen, p)


def test_generate_steps_the_cache_and_batches_like_single_prompts(dirs):
    export, hf = dirs[2]
    model, tok = load_hf(hf)
    _, _, gen = aunet_side(export)
    full_passes = []
    real_hidden = model.core.hidden
    model.core.hidden = lambda *a, **k: full_passes.append(1) or real_hidden(*a, **k)
    prompts = [PROMPTS[0] * 3, PROMPTS[1]]  # lengths 78 and 20
    left = hf_greedy(model, tok, prompts, 40, "left")
    assert not full_passes  # the prefix is never recomputed: prefill, then one cached step per byte
    right = hf_greedy(model, tok, prompts, 40, "right")
    alone = [hf_greedy(model, tok, [p], 40)[0] for p in prompts]
    assert all(len(o) == 40 for o in (*left, *right, *alone))
    # Batches of other shapes and paddings round differently from a prompt alone: equal bytes
    # up to a near tie of the top two logits, if one comes (see tests/greedy.py).
    for p, a, l, r in zip(prompts, alone, left, right):
        assert_same_greedy(l, a, gen, p)
        assert_same_greedy(r, a, gen, p)


def test_generation_stops_at_eos(dirs):
    _, hf = dirs[2]
    model, tok = load_hf(hf)
    # Both generate() calls run the same batch shapes in this process, row by row the same
    # sums, so their bytes compare exactly.
    free = hf_greedy(model, tok, PROMPTS, 24)
    stop_byte = free[0][5]
    cut = free[0].index(stop_byte)  # first time the first row writes that byte
    enc = tok([p.decode() for p in PROMPTS], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=24, do_sample=False, suppress_tokens=[256, 257], eos_token_id=stop_byte)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    assert bytes(new[0][: cut + 1]) == free[0][: cut + 1]
    assert all(t == 257 for t in new[0][cut + 1:])  # a finished row is padded with the pad id (EOS)
    rest = new[1]  # the other row runs on until it writes that byte too
    end = rest.index(stop_byte) + 1 if stop_byte in rest else len(rest)
    assert bytes(rest[:end]) == free[1][:end] and all(t == 257 for t in rest[end:])
    assert len(rest) == 24 or stop_byte in rest  # the loop ends when every row has stopped


def test_sampling_draws_from_aunets_distribution(dirs):
    export, hf = dirs[2]
    model, tok = load_hf(hf)
    _, _, gen = aunet_side(export)
    enc = tok(PROMPTS[0].decode(), return_tensors="pt")

    def sample(seed: int, **kw):
        torch.manual_seed(seed)
        kw = {"temperature": 0.9, "top_k": 50, **kw}
        return model.generate(**enc, max_new_tokens=32, do_sample=True, return_dict_in_generate=True, output_logits=True, **kw)

    a, b, c = sample(1), sample(1), sample(2)
    # The same seed, shapes and code in one process: the same draws, exactly.
    assert torch.equal(a.sequences, b.sequences) and not torch.equal(a.sequences, c.sequences)
    # Along the sampled path, the logits HF sampled from are aunet's generator's, step for step.
    new = a.sequences[0, enc["input_ids"].shape[1]:].tolist()
    want = [gen.prefill([PROMPTS[0]])[0]] + [gen.step([t])[0] for t in new[:-1]]
    assert max((x[0] - y).abs().max().item() for x, y in zip(a.logits, want)) <= 1e-5
    # top_k=1 takes the argmax of the very logits greedy takes it of (one prompt, same shapes).
    greedy = hf_greedy(model, tok, [PROMPTS[0]], 32)[0]
    top1 = sample(3, top_k=1, suppress_tokens=[256, 257]).sequences[0, enc["input_ids"].shape[1]:]
    assert bytes(top1.tolist()) == greedy


def test_tokenizer_bytes_round_trip_and_decode_never_raises(dirs):
    _, hf = dirs[1]
    _, tok = load_hf(hf)
    text = "héllo <|bos|> wörld 東京 \U0001f600"
    ids = tok(text)["input_ids"]
    assert ids == [256] + list(text.encode())  # BOS, then the bytes; a literal "<|bos|>" stays bytes
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids).startswith("<|bos|>")
    invalid = [0xFF, 0xC3, 0x41, 0xE2, 0x82, 0x80, 0xE2, 0x82]  # stray bytes, a complete € and a cut one
    assert tok.decode(invalid) == bytes(invalid).decode("utf-8", errors="replace")
    assert tok.decode([65, 999, -3, 257, 66]) == "A\ufffd\ufffd<|eos|>B"
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        tok.decode(torch.randint(0, 258, (64,), generator=g).tolist())
    assert tok("\ud800")["input_ids"] == [256, 0xED, 0xA0, 0x80]  # lone surrogate: surrogatepass, as aunet generate


def test_without_aunet_the_model_code_says_what_to_install(dirs, tmp_path):
    _, hf = dirs[1]
    code = ("import sys; sys.modules['aunet'] = None\n"
            "from transformers import AutoModelForCausalLM\n"
            f"AutoModelForCausalLM.from_pretrained({str(hf)!r}, trust_remote_code=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**cpu_dist_env(), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "pip install aunet" in proc.stderr, proc.stderr[-2000:]


def test_aunet_reads_an_hf_directory_without_importing_transformers(dirs):
    export, hf = dirs[2]
    # The weights compare exactly: both directories store the same floats, loading copies them.
    code = ("import sys, torch, aunet, aunet.cli\n"
            "aunet.cli.build_parser()\n"
            "from aunet.inference.export import load_model\n"
            f"a, _ = load_model({str(export)!r}); b, cfg = load_model({str(hf)!r})\n"
            "assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))\n"
            "assert cfg.data.regex.strategy == {'word1': '1@1', 'word2': '2@1'}\n"
            "assert 'transformers' not in sys.modules, 'transformers was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_hf_directories_are_refused_with_the_file_named(dirs, tmp_path):
    import shutil

    from aunet.config import load_config
    from aunet.inference.export import load_model
    from aunet.training.init_weights import InitCheckpointError, resolve

    _, hf = dirs[2]
    other = tmp_path / "llama"
    other.mkdir()
    shutil.copyfile(hf / "model.safetensors", other / "model.safetensors")
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(FileNotFoundError, match="aunet export --format hf"):
        load_model(other)
    broken = tmp_path / "broken"
    shutil.copytree(hf, broken)
    config = json.loads((broken / "config.json").read_text())
    config["aunet_strategy"] = {"word1": "1@1"}  # a mapping: the stage order would be lost
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{broken / 'config.json'}: aunet_strategy must be a list"):
        load_model(broken)
    cfg, _ = load_config(CONFIG)
    with pytest.raises(InitCheckpointError, match="aunet_strategy must be a list"):
        resolve(broken, cfg)
    # A repeated key would load as fewer stages than the weights have (issue 29 item 6).
    config["aunet_strategy"] = [["word", "1@1"], ["word", "2@1"]]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{broken / 'config.json'}: aunet_strategy repeats the key\\(s\\) 'word'"):
        load_model(broken)
    proc = subprocess.run([venv_script("aunet"), "export", "--model", str(hf), "--out", str(tmp_path / "x"), "--format", "hf"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "config.yaml" in proc.stderr  # --model takes an `aunet export` directory


@pytest.mark.distributed
def test_hf_directory_continues_training_and_exports_from_checkpoints(tmp_path, data_root):
    """init_ckpt_path = an hf directory: the run starts from its weights; the run's checkpoints
    then export straight to the hf format, with the held-out bpb in the model card."""
    import numpy as np

    from aunet.config import load_config, to_dict
    from aunet.inference.export import load_model

    dump = tmp_path / "run"
    args = [*overrides(data_root, dump, 2), "eval.validation.sources.heldout=1.0", "eval.validation.max_steps=1",
            "checkpoint.eval.every=2"]
    cfg, _ = load_config(CONFIG, args)
    export = write_export(tmp_path / "export", to_dict(cfg), seed=5)
    hf = tmp_path / "hf"
    assert subprocess.run([venv_script("aunet"), "export", "--model", str(export), "--out", str(hf), "--format", "hf"]).returncode == 0
    out = run([*args, f"checkpoint.init_ckpt_path={hf}"])
    assert f"initialised the weights from {hf} (hf, step 0)" in out
    trained = tmp_path / "trained"
    proc = subprocess.run([venv_script("aunet"), "export", "--checkpoints", str(dump / "checkpoints"), "--out", str(trained),
                           "--format", "hf"], capture_output=True, text=True, env=cpu_dist_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    start, _ = load_model(hf)
    after, after_cfg = load_model(trained)
    assert after_cfg.checkpoint.init_ckpt_path == str(hf)
    moved = [k for k, v in after.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert moved  # two optimizer steps changed the weights ...
    delta = max((v - start.state_dict()[k]).abs().max().item() for k, v in after.state_dict().items())
    assert delta < 0.1  # ... a little: they started from the hf directory's, not from a fresh init
    val = [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines() if "val_bpb" in line]
    card = (trained / "README.md").read_text()
    assert f"{val[-1]['val_bpb']:.4f} bits per byte" in card and "exported at step 2" in card
    # `aunet eval` and the lm-eval adapter take the hf directory as they take an export.
    evals = {}
    for source in (hf, export):
        proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(source), "--data", str(data_root / "heldout"),
                               "--max-batches", "1"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        evals[source] = json.loads(proc.stdout)["overall"]["bpb"]
    # Two processes: the same sums in the same order as a rule, but nothing promises a thread
    # count; 1e-6 relative is far below what a wrong weight moves.
    assert evals[hf] == pytest.approx(evals[export], rel=1e-6)
    from aunet.inference.lm_eval_adapter import AUNetLM

    pairs = [(b"def f(x):", b" return x"), (b"The cat", b" sat")]
    # One process, equal weights (test_aunet_reads_an_hf_directory_...), the same shapes and
    # code: equal to the last bit.
    assert AUNetLM(path=str(hf)).score(pairs) == AUNetLM(path=str(export)).score(pairs)
    model, tok = load_hf(trained)
    enc = tok("def pool(levels):", return_tensors="pt")
    from aunet.segment import Segmenter

    levels = torch.from_numpy(Segmenter(after_cfg.data.regex.strategy).levels(b"def pool(levels):", bos=True).astype(np.int64))[None]
    with torch.no_grad():
        assert (model(**enc).logits - after(enc["input_ids"], levels)[0]).abs().max().item() <= 1e-5


def test_the_exported_code_runs_on_the_oldest_supported_transformers(dirs):
    """The GPU machine has transformers 5.17, older than the pin: `make install` builds an
    overlay environment with it (requirements-oldest-transformers.txt), and the same export
    gives the same greedy bytes and logits there."""
    oldest = REPO_ROOT / ".venv" / "oldest-transformers" / "bin" / "python"
    assert oldest.exists(), "run `make install`: it builds .venv/oldest-transformers"
    script = str(REPO_ROOT / "tests" / "scripts" / "hf_generate_check.py")
    export, hf = dirs[2]
    results = []
    for python in (sys.executable, str(oldest)):
        # One thread in both, so that thread counts do not differ between the two processes.
        proc = subprocess.run([python, script, str(hf)], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    pinned, old = results
    assert old["version"] == "5.17.0" and pinned["version"] != old["version"]
    # The same model code on the same bytes, one thread each, but two transformers versions
    # (their generate loops may slice and pad differently): equal up to a near tie.
    _, _, gen = aunet_side(export)
    assert len(old["greedy"]) == len(pinned["greedy"]) == 2
    for prompt, a, b in zip([b"The cat", b"def pool(levels):"], old["greedy"], pinned["greedy"]):
        assert_same_greedy(bytes(a), bytes(b), gen, prompt)
    assert torch.allclose(torch.tensor(old["logits"]), torch.tensor(pinned["logits"]), atol=1e-5)
