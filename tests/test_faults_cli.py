"""Bad input to `aunet generate` and `aunet eval`: refused at parse time with rc 2 (before a
model is loaded or anything printed), raw-byte prompts, and an eval with nothing to score."""

from __future__ import annotations

import codecs
import json
import subprocess

import pytest

from aunet.cli import main
from aunet.config import load_config
from aunet.inference.export import load_model
from aunet.inference.generate import Generator
from helpers import REPO_ROOT, venv_script
from model_helpers import export_random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-cli")
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=256"])
    export_random_model(root / "export", cfg)
    return root / "export"


@pytest.mark.parametrize("bad, named", [
    (["--top-p", "0"], "--top-p"), (["--top-p", "2"], "--top-p"), (["--top-p", "nan"], "--top-p"),
    (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--temperature", "inf"], "--temperature"), (["--top-k", "-3"], "--top-k"), (["--top-k", "1.5"], "--top-k"),
    (["--batch-size", "0"], "--batch-size"), (["--max-bytes", "-1"], "--max-bytes"),
])
def test_generate_refuses_bad_sampling_settings_at_parse_time(model_dir, capsys, bad, named):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--model", str(model_dir), "--prompt", "The cat", "--max-bytes", "8", *bad])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert f"argument {named}:" in err and out == ""  # nothing printed before the refusal


def test_eval_refuses_bad_batch_settings_at_parse_time(model_dir, capsys):
    for bad in (["--batch-size", "0"], ["--max-batches", "-2"]):
        with pytest.raises(SystemExit) as exit_:
            main(["eval", "--model", str(model_dir), "--data", str(model_dir), *bad])
        assert exit_.value.code == 2 and f"argument {bad[0]}:" in capsys.readouterr().err


def test_the_library_refuses_them_too(model_dir):
    model, cfg = load_model(model_dir)
    gen = Generator(model, cfg.data.regex.strategy)
    for settings in ({"top_p": 0.0}, {"temperature": -1.0}, {"top_k": -3}, {"temperature": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(settings))} must be"):
            gen.generate([b"x"], 4, **settings)


@pytest.mark.slow  # 3 s: the aunet CLI in subprocesses
def test_a_prompt_file_is_taken_as_raw_bytes(model_dir, tmp_path, capsys):
    raw = b"caf\xc3\xa9 \xff\xfe\x00 bytes"  # valid UTF-8, then bytes that are not
    (tmp_path / "prompt.bin").write_bytes(raw)
    model, cfg = load_model(model_dir)
    (expected,) = Generator(model, cfg.data.regex.strategy).generate([raw], max_bytes=12, temperature=0)
    assert main(["generate", "--model", str(model_dir), "--prompt-file", str(tmp_path / "prompt.bin"), "--max-bytes", "12",
                 "--temperature", "0"]) == 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert capsys.readouterr().out == decoder.decode(raw) + decoder.decode(expected, final=True) + "\n"
    # With another prompt: one JSON line each, the raw prompt's invalid bytes shown as U+FFFD.
    assert main(["generate", "--model", str(model_dir), "--prompt", "The cat", "--prompt-file", str(tmp_path / "prompt.bin"),
                 "--max-bytes", "12", "--temperature", "0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["The cat", raw.decode("utf-8", "replace")]
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--model", str(model_dir), "--prompt-file", str(tmp_path / "missing.bin")])
    assert exit_.value.code == 2 and f"cannot read {tmp_path / 'missing.bin'}" in capsys.readouterr().err


@pytest.mark.slow  # 3 s: the aunet CLI in subprocesses
def test_eval_on_an_empty_file_says_there_is_nothing_to_score(model_dir, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("The cat sat on the mat. " * 20)
    proc = subprocess.run([venv_script("aunet"), "eval", "--model", str(model_dir), "--data", str(tmp_path / "empty.txt"),
                           str(tmp_path / "notes.txt"), "--batch-size", "1"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{tmp_path / 'empty.txt'}: nothing to score (0 bytes" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["sources"][str(tmp_path / "empty.txt")] == {"bpb": None, "bytes": 0}
    notes = report["sources"][str(tmp_path / "notes.txt")]
    assert notes["bytes"] == len("The cat sat on the mat. " * 20) and notes["bpb"] > 0
    assert report["overall"]["bytes"] == notes["bytes"] and report["overall"]["bpb"] == pytest.approx(notes["bpb"])
