"""The lm-evaluation-harness adapter on tasks written here (local JSON files, no download)."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aunet import Segmenter
from aunet.config import load_config
from aunet.inference.generate import Generator, decode_utf8
from aunet.inference.lm_eval_adapter import AUNetLM, plan_windows
from greedy import TIE, agreed_length
from model_helpers import export_random_model
from helpers import REPO_ROOT, venv_script

# Slow tier: the evaluation harness end to end, 18 s in all (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow

QUESTIONS = [
    {"question": "The capital of France is", "choices": [" Paris", " a fish", " blue"], "answer": 0},
    {"question": "def add(a, b):\n    return", "choices": [" a + b", " 42", " None  # é"], "answer": 0},
    {"question": "Counting: one, two,", "choices": [" three", " seven"], "answer": 0},
]
DOCUMENTS = [
    {"text": "The cat sat on the mat. It looked at the dog, and the dog looked back."},
    {"text": "Ünïcödé bytes count as bytes: naïve café, 東京, and emoji 🙂 too.\n" * 3},
    {"text": "import os\nprint(os.getcwd())\n" * 12},  # longer than max_length=256 in the harness run
]
PROMPTS = [{"prompt": "Once upon a time", "target": "x"}, {"prompt": "def f(x):\n", "target": "y"}]

TASKS = {
    "aunet_toy_choice": {
        "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}], "data": QUESTIONS,
    },
    "aunet_toy_rolling": {
        "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "bits_per_byte"}, {"metric": "byte_perplexity"}], "data": DOCUMENTS,
    },
    "aunet_toy_generate": {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{target}}",
        "generation_kwargs": {"until": ["\n\n", "."], "max_gen_toks": 24, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}], "data": PROMPTS,
    },
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=256"])
    model = export_random_model(root / "export", cfg)
    tasks = root / "tasks"
    tasks.mkdir()
    # The first prompt's target is the model's own greedy continuation (cut at the first stop
    # string), the second's a byte it does not write: exact_match must come out as exactly 1/2.
    gen = TASKS["aunet_toy_generate"]["generation_kwargs"]
    generator = Generator(model.eval(), cfg.data.regex.strategy)
    prompt = PROMPTS[0]["prompt"].encode()
    out = generator.generate([prompt], gen["max_gen_toks"], 0.0)[0]
    # The harness generates in another process and batch, which round differently: exactly
    # 1/2 needs every byte of this path to win by more than a near tie (tests/greedy.py).
    assert agreed_length(generator, prompt, out) == len(out), "a near tie on the target's greedy path: pick another prompt"
    first = decode_utf8(out)
    for stop in gen["until"]:
        first = first.split(stop)[0]
    targets = [first, "\x00"]
    for name, spec in TASKS.items():
        spec = dict(spec)
        if name == "aunet_toy_generate":
            spec["data"] = [{**row, "target": t} for row, t in zip(spec["data"], targets)]
        data = tasks / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in spec.pop("data")))
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump({
            "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", **spec,
        }))
    return root, model.eval(), cfg


def direct_logprob(model, strategy, context: bytes, continuation: bytes) -> float:
    """Sum of log p(continuation | BOS + context), one forward pass, with the levels generation
    gives (SPEC section 7): the context's full-document levels, the continuation's causal ones."""
    data = context + continuation
    seg = Segmenter(strategy)
    stream = seg.stream()
    stream.push(context)
    levels = seg.levels(context, bos=True).tolist() + stream.push(continuation).tolist()
    with torch.no_grad():
        logits, _ = model(torch.tensor([[256, *data]]), torch.tensor([levels]))
    logprobs = logits[0].float().log_softmax(-1)
    return sum(float(logprobs[p - 1, data[p - 1]]) for p in range(1 + len(context), 1 + len(data)))


def greedy_flag_is_clear(model, strategy, context: bytes, continuation: bytes) -> bool:
    """Whether "every continuation byte is the argmax" holds or fails by more than a near tie
    (tests/greedy.py), for the whole input segmented as one document (`levels=full`): only
    then must two computations that round differently agree on it."""
    data = context + continuation
    with torch.no_grad():
        logits, _ = model(torch.tensor([[256, *data]]), torch.tensor([Segmenter(strategy).levels(data, bos=True).tolist()]))
    margins = []
    for p in range(len(context), len(data)):
        row = logits[0, p].float().clone()
        chosen = float(row[data[p]])
        row[data[p]] = float("-inf")
        margins.append(chosen - float(row.max()))
    return min(margins) < -TIE or all(abs(m) > TIE for m in margins)


def test_loglikelihood_equals_a_direct_forward_pass(setup):
    root, model, cfg = setup
    lm = AUNetLM(path=str(root / "export"), batch_size=3)
    pairs = [(q["question"].encode(), c.encode()) for q in QUESTIONS for c in q["choices"]]
    got = lm.score(pairs)
    for (context, continuation), (logprob, _) in zip(pairs, got):
        assert logprob == pytest.approx(direct_logprob(model, cfg.data.regex.strategy, context, continuation), abs=1e-4)
    # Batching (sorted, right-padded) changes nothing.
    one_by_one = AUNetLM(path=str(root / "export"), batch_size=1).score(pairs)
    assert [g[0] for g in got] == pytest.approx([o[0] for o in one_by_one], abs=1e-4)


def test_is_greedy_reports_whether_every_byte_is_the_argmax(setup):
    root, model, cfg = setup
    lm = AUNetLM(path=str(root / "export"))
    out = Generator(model, cfg.data.regex.strategy).generate([b"The cat"], 12)[0]
    assert lm.score([(b"The cat", out)]) [0][1] is True
    flipped = bytes([out[0] ^ 1]) + out[1:]
    assert lm.score([(b"The cat", flipped)])[0][1] is False


def test_full_levels_use_the_whole_window_mask(setup):
    root, model, cfg = setup
    lm = AUNetLM(path=str(root / "export"), levels="full")
    data = b"3.14159 is pi; 2,718 is e."
    levels = Segmenter(cfg.data.regex.strategy).levels(data, bos=True).tolist()
    with torch.no_grad():
        logits, _ = model(torch.tensor([[256, *data]]), torch.tensor([levels]))
    lp = logits[0].log_softmax(-1)
    expected = sum(float(lp[p, data[p]]) for p in range(len(data)))
    assert lm.score([(b"", data)])[0][0] == pytest.approx(expected, abs=1e-4)


@given(n=st.integers(0, 300), first=st.integers(0, 300), width=st.integers(2, 64))
def test_windows_score_every_byte_once_within_the_width(n, first, width):
    first = min(first, n)
    windows = list(plan_windows(n, first, width))
    covered = [p for _, lo, hi in windows for p in range(lo, hi)]
    assert covered == list(range(first, n))
    for start, lo, end in windows:
        assert 0 <= start <= lo < end <= start + width
        # As much context as fits, and at least width // 2 bytes of it in windows after the first.
        assert start == max(0, end - width)


def test_long_text_is_scored_in_windows(setup):
    root, model, cfg = setup
    text = ("import os\nprint(os.getcwd())\n" * 12).encode()
    lm = AUNetLM(path=str(root / "export"), max_length=64)
    expected = 0.0
    for start, first, end in plan_windows(len(text), 0, 63):
        expected += direct_logprob(model, cfg.data.regex.strategy, text[start:first], text[first:end])
    assert lm.score([(b"", text)])[0][0] == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="levels must be"):
        AUNetLM(path=str(root / "export"), levels="sometimes")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        AUNetLM(path=str(root))


def test_harness_runs_end_to_end_from_python(setup, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    root, model, cfg = setup
    results = lm_eval.simple_evaluate(
        model="aunet", model_args=f"path={root / 'export'}", tasks=list(TASKS), batch_size=4,
        task_manager=TaskManager(include_path=str(root / "tasks")),
    )["results"]
    strategy = cfg.data.regex.strategy
    # Multiple choice: the harness picks the choice with the highest loglikelihood we return,
    # for the continuation it asks about: its target_delimiter (" ") and the choice.
    hits = [max(range(len(q["choices"])), key=lambda c: direct_logprob(model, strategy, q["question"].encode(), b" " + q["choices"][c].encode())) == q["answer"]
            for q in QUESTIONS]
    assert results["aunet_toy_choice"]["acc,none"] == pytest.approx(sum(hits) / len(hits))
    # Rolling: the harness's bits_per_byte is our bpb over the documents' bytes (windows of 255 bytes).
    nats = 0.0
    for doc in DOCUMENTS:
        data = doc["text"].encode()
        nats += sum(direct_logprob(model, strategy, data[s:f], data[f:e]) for s, f, e in plan_windows(len(data), 0, 255))
    n_bytes = sum(len(d["text"].encode()) for d in DOCUMENTS)
    assert results["aunet_toy_rolling"]["bits_per_byte,none"] == pytest.approx(-nats / n_bytes / math.log(2), rel=1e-5)
    assert results["aunet_toy_generate"]["exact_match,none"] == 0.5


def test_generate_until_is_the_generator_output_cut_at_the_stop_string(setup):
    from lm_eval.api.instance import Instance

    root, model, cfg = setup
    lm = AUNetLM(path=str(root / "export"), batch_size=2)
    greedy = {"until": ["e"], "max_gen_toks": 40, "do_sample": False}
    sampled = {"until": ["\n"], "max_gen_toks": 30, "do_sample": True, "temperature": 0.8, "seed": 3}
    prompts = [p["prompt"] for p in PROMPTS] + ["Ünïcödé", "x = [1, 2,"]
    requests = [Instance("generate_until", {}, (p, kw), 0) for kw in (greedy, sampled) for p in prompts]
    got = lm.generate_until(requests)  # batches of 2, grouped by options
    assert len(got) == len(requests)
    for r, text in zip(requests, got):
        prompt, kw = r.args
        temperature = kw["temperature"] if kw["do_sample"] else 0.0
        generator = Generator(model, cfg.data.regex.strategy)
        alone = generator.generate([prompt.encode()], kw["max_gen_toks"], temperature, seed=kw.get("seed", 0))[0]
        want = decode_utf8(alone).split(kw["until"][0])[0]
        n = agreed_length(generator, prompt.encode(), alone) if temperature == 0 else len(alone)
        if n == len(alone):
            # Sampled rows compare exactly too: a batch of 2 moves the logits by about 1e-6, which
            # changes a draw only if its uniform number falls that close to a boundary of the
            # cumulative distribution (about one chance in 1e6 per byte).
            assert text == want
        else:  # greedy with a near tie: a batch of 2 may break it the other way (tests/greedy.py)
            assert text.startswith(decode_utf8(alone[:n]).split(kw["until"][0])[0]), (n, text, want)
        assert kw["until"][0] not in text


def test_aunet_lm_eval_command_writes_results(setup, tmp_path):
    root, _, _ = setup
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [venv_script("aunet"), "lm-eval", "run", "--model", "aunet", "--model_args", f"path={root / 'export'}",
         "--tasks", "aunet_toy_choice", "--include_path", str(root / "tasks"), "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = list((tmp_path / "out").rglob("results_*.json"))
    assert "acc,none" in json.loads(results.read_text())["results"]["aunet_toy_choice"]


def test_long_prompts_keep_their_end_and_a_large_max_gen_toks_cannot_empty_them(setup):
    from lm_eval.api.instance import Instance

    from aunet.inference.lm_eval_adapter import prompt_room

    root, model, cfg = setup
    lm = AUNetLM(path=str(root / "export"))  # max_length = data.seq_len = 256
    assert prompt_room(256, 40) == 215 and prompt_room(256, 256) == 128 and prompt_room(256, 1000) == 128
    context = "".join(f"line {i}\n" for i in range(60))  # 410 bytes
    request = Instance("generate_until", {}, (context, {"until": ["\n\n"]}), 0)  # the harness's default 256 bytes
    with pytest.warns(UserWarning, match="keeps its last 128 bytes"):
        (got,) = lm.generate_until([request])
    kept = context.encode()[-128:]
    expected = decode_utf8(Generator(model, cfg.data.regex.strategy).generate([kept], 256, stop=[b"\n\n"])[0])
    assert got == expected.split("\n\n")[0]


def test_the_harness_own_hf_model_runs_on_our_export_and_scores_as_aunet_lm_eval(setup, tmp_path):
    """`lm_eval --model hf` on `aunet export --format hf` (the `eval` extra brings accelerate,
    which it needs). Its forward pass segments the whole input as one document, which is
    `aunet lm-eval`'s `levels=full`. Contexts here do not end in white space: the harness moves
    such white space into the continuation, which changes what is scored."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    root, model, cfg = setup
    hf_dir = tmp_path / "hf"
    proc = subprocess.run([venv_script("aunet"), "export", "--model", str(root / "export"), "--out", str(hf_dir), "--format", "hf"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    harness = HFLM(pretrained=str(hf_dir), trust_remote_code=True, batch_size=1, device="cpu")
    ours = AUNetLM(path=str(root / "export"), levels="full")
    requests = [Instance("loglikelihood", {}, (q["question"], c), 0) for q in QUESTIONS for c in q["choices"]]
    clear = 0
    for r, (a, greedy_a), (b, greedy_b) in zip(requests, harness.loglikelihood(requests), ours.loglikelihood(requests)):
        assert a == pytest.approx(b, abs=1e-4)  # 1e-4: fp32 sums in other orders
        # The greedy flags must agree unless a byte is within a near tie of the argmax, where
        # the two roundings may decide it each its own way.
        if greedy_flag_is_clear(model, cfg.data.regex.strategy, r.args[0].encode(), r.args[1].encode()):
            clear += 1
            assert greedy_a == greedy_b, r.args
    assert clear >= len(requests) - 1  # near ties are rare: the flags are compared at all
    # Rolling: the harness puts BOS before a text our tokenizer opens with BOS; the model reads
    # the doubled BOS as one (before that fix the sums differed by 7-10 nats here).
    texts = [d["text"] for d in DOCUMENTS if len(d["text"].encode()) < 250]  # one window on both sides
    rolling = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in texts]
    assert len(rolling) == 2
    for a, b in zip(harness.loglikelihood_rolling(rolling), ours.loglikelihood_rolling(rolling)):
        # Sums of a few hundred fp32 log-probabilities, added in other orders: 1e-6 relative.
        assert a == pytest.approx(b, rel=1e-6, abs=1e-4)
