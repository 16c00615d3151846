"""Every typed config key is acted on, checked, or reported as unused (SPEC section 8), and the
configuration reference (docs/configuration.md, generated from the field docstrings by
`make docs`) describes each one."""

from __future__ import annotations

import dataclasses
import gc
import re
import typing

import pytest
import torch

from aunet.config import ConfigError, TrainArgs, config_from_dict
from helpers import REPO_ROOT


def config_keys(cls=TrainArgs, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) not in (list, dict) else []
        target = inner[0] if len(inner) == 1 else tp
        keys += config_keys(target, f"{prefix}{f.name}.") if dataclasses.is_dataclass(target) else [prefix + f.name]
    return keys


def documented_keys() -> dict[str, str]:
    """Key -> description cell of docs/configuration.md. tests/test_docs.py checks that the file
    is what the docstrings generate; this checks that no key goes without a description (a
    field without a docstring gets an empty cell)."""
    rows = {}
    for line in (REPO_ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 4 and re.fullmatch(r"`[a-z0-9_.]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[3]
    return rows


def test_the_configuration_reference_describes_every_key():
    rows = documented_keys()
    assert sorted(rows) == sorted(config_keys())  # none missing, none stale
    assert all(rows.values()), [k for k, v in rows.items() if not v]


def test_n_views_other_than_two_is_refused():
    with pytest.raises(ConfigError, match="data.n_views: only 2"):
        config_from_dict({"data": {"n_views": 3}})


def test_checkpoint_eval_keep_is_reported_as_unused():
    _, unused = config_from_dict({"checkpoint": {"eval": {"every": 5, "keep": 1}}})
    assert unused == ["checkpoint.eval.keep"]


def test_torch_settings_follow_the_config():
    import torch._dynamo

    from aunet.training.trainer import apply_torch_settings

    from aunet.model.compile import compile_shapes

    cfg, _ = config_from_dict({"distributed": {"matmul_allow_tf32": True, "compile": True, "compile_cache_size_limit": 3}})
    big, _ = config_from_dict({"distributed": {"compile": True, "compile_cache_size_limit": 1000}})
    before = (torch.backends.cuda.matmul.allow_tf32, torch._dynamo.config.cache_size_limit, gc.isenabled())
    try:
        apply_torch_settings(cfg, on_gpu=True)
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
        # Raised to hold every stage bucket in training and validation, never lowered below the config.
        assert torch._dynamo.config.cache_size_limit == 2 * compile_shapes(cfg.model, cfg.data.seq_len) > 3
        apply_torch_settings(big, on_gpu=True)
        assert torch._dynamo.config.cache_size_limit == 1000
        assert not gc.isenabled()  # gc_collect_freq collects instead, on every rank at the same step
        off, _ = config_from_dict({})
        apply_torch_settings(off, on_gpu=True)
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch._dynamo.config.cache_size_limit = before[:2]
        gc.enable()


@pytest.mark.slow  # 2 s: aunet generate in a subprocess
def test_generate_keeps_prompt_and_output_within_max_tokens(tmp_path, capsys):
    from aunet.cli import keep_tail, main
    from aunet.config import load_config
    from model_helpers import export_random_model

    assert keep_tail("abcdef", 4) == "cdef" and keep_tail("abc", 4) == "abc"
    assert keep_tail("x日本", 4) == "本"  # never starts inside a character
    cfg, _ = load_config(REPO_ROOT / "configs" / "tiny_aunet3.yaml", ["data.seq_len=64", "eval.generator.max_tokens=40"])
    export_random_model(tmp_path / "export", cfg)
    assert main(["generate", "--model", str(tmp_path / "export"), "--max-bytes", "40"]) == 1
    assert "eval.generator.max_tokens = 40" in capsys.readouterr().err
    prompt = "0123456789" * 5
    assert main(["generate", "--model", str(tmp_path / "export"), "--prompt", prompt, "--max-bytes", "10",
                 "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "cut to its last 30" in captured.err and captured.out.startswith(prompt[-30:])
