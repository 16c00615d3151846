"""Config loading: the published reference configs load unchanged, overrides, unused keys, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from aunet.config import ConfigError, ModelArgs, TrainArgs, apply_overrides, config_from_dict, load_config, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
REFERENCE_UNUSED = ["probe_freq", "profiling", "async_eval_gpus", "eval.harness", "checkpoint.eval.keep"]


def test_aunet2_published_config_has_the_spec_values():
    args, unused = load_config(CONFIGS / "aunet2_1b.yaml")
    m = args.model
    assert m.dimensions == [512, 2048]
    assert m.layers == [3, 25]
    assert m.head_dims == [64, 128]
    assert m.residuals == [True]
    assert m.sliding_windows == [512, 4096]
    assert m.max_seqlens == [-1, 3200]
    assert (m.block.rope_theta, m.block.multiple_of) == (500000.0, 256)
    assert (m.lambda_level, m.pooling_type) == (0.0, "simple_indexed_matmul")
    d = args.data
    assert (d.seq_len, d.batch_size, d.n_views, d.add_bos, d.add_eos) == (8192, 12, 2, True, True)
    assert d.tokenizer.name == "bytes"
    assert d.regex is not None and d.regex.strategy == {"word1": "1@1"}
    o = args.optim
    assert (o.lr, o.warmup, o.weight_decay, o.lr_min_ratio, o.clip) == (1.65e-3, 10000, 0.1, 0.01, 0.2)
    assert (args.steps, args.seed) == (180000, 777)
    dist = args.distributed
    assert (dist.fsdp_type, dist.compile, dist.model_dtype, dist.zero) == ("full_shard", True, "bf16", 3)
    assert sorted(unused) == sorted(REFERENCE_UNUSED)


def test_aunet3_published_config_has_the_spec_values():
    args, unused = load_config(CONFIGS / "aunet3_1b.yaml")
    m = args.model
    assert m.dimensions == [512, 2048, 3456]
    assert m.layers == [3, 6, 12]
    assert m.head_dims == [64, 128, 128]
    assert m.residuals == [True, True]
    assert m.sliding_windows == [512, 4096, 4096]
    assert m.max_seqlens == [-1, 1600, 928]
    assert (m.block.rope_theta, m.block.multiple_of, m.pooling_type) == (500000.0, 256, "simple_indexed_matmul")
    assert args.data.batch_size == 11 and args.data.seq_len == 8192
    assert args.data.regex.strategy == {"word1": "1@1", "word2": "2@1"}
    assert (args.optim.lr, args.optim.lr_min_ratio, args.optim.warmup, args.optim.clip) == (1.1e-3, 0.001, 10000, 0.2)
    assert (args.steps, args.seed) == (300000, 777)
    assert sorted(unused) == sorted(REFERENCE_UNUSED)


def test_published_files_keep_the_reference_sections():
    """'Unchanged': the unused sections are really in the files, and they are reported."""
    raw = yaml.safe_load((CONFIGS / "aunet2_1b.yaml").read_text())
    assert {"profiling", "probe_freq", "async_eval_gpus"} <= set(raw)
    assert "harness" in raw["eval"]


@pytest.mark.parametrize("name,levels", [("tiny_aunet2", 1), ("tiny_aunet3", 2)])
def test_tiny_configs_load_without_unused_keys(name, levels):
    args, unused = load_config(CONFIGS / f"{name}.yaml")
    assert unused == []
    assert args.model.n_levels == levels
    assert 256 <= args.data.seq_len <= 512


def test_unused_keys_are_logged_as_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="aunet.config.load"):
        _, unused = config_from_dict({"probe_freq": 3, "model": {"patch_read_delay": 0, "block": {"qk_norm": True}}})
    assert unused == ["probe_freq", "model.patch_read_delay", "model.block.qk_norm"]
    assert len(caplog.records) == 1
    assert "model.block.qk_norm" in caplog.records[0].getMessage()


def test_overrides_parse_yaml_values_and_reach_nested_keys(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text((CONFIGS / "aunet3_1b.yaml").read_text())
    args, unused = load_config(path, [
        "optim.lr=1e-3",  # PyYAML reads this as a string; the float field converts it
        "model.layers=[2, 2, 2]",
        "model.residuals=[true, false]",
        "distributed.compile=false",
        "data.regex.strategy.word2=2@1-3",
        "data.root_dir=/data/x=y",  # only the first '=' splits
        "logging.wandb.project=foo",
        "logging.wandb.job_type=train",  # a reference key we do not act on: reported, not rejected
        "model.block.n_kv_heads=null",
    ])
    assert args.optim.lr == 1e-3
    assert args.model.layers == [2, 2, 2]
    assert args.model.residuals == [True, False]
    assert args.distributed.compile is False
    assert args.data.regex.strategy == {"word1": "1@1", "word2": "2@1-3"}
    assert args.data.root_dir == "/data/x=y"
    assert args.logging.wandb.project == "foo"
    assert "logging.wandb.job_type" in unused


def test_override_does_not_modify_the_input():
    raw = {"model": {"layers": [3, 25]}}
    out = apply_overrides(raw, ["model.layers=[1, 1]"])
    assert raw == {"model": {"layers": [3, 25]}} and out["model"]["layers"] == [1, 1]


@pytest.mark.parametrize("override", ["model.layers", "=3", "model..layers=3"])
def test_malformed_overrides_fail(override):
    with pytest.raises(ConfigError):
        apply_overrides({}, [override])


def test_override_through_a_value_names_the_key():
    with pytest.raises(ConfigError, match=r"^model\.layers: is a value"):
        apply_overrides({"model": {"layers": [1, 2]}}, ["model.layers.x=3"])


@pytest.mark.parametrize("override,key", [
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=fast", "optim.lr"),
    ("steps=1.5", "steps"),
    ("model.layers=[3, x]", r"model.layers\[1\]"),
    ("model.layers=[3, 25, 4]", "model.layers"),
    ("model.head_dims=[64, 100]", r"model.head_dims\[1\]"),
    ("model.pooling_type=simple_banana", "model.pooling_type"),
    ("model.pooling_type=simple_repeat_repeat", "model.pooling_type"),
    ("model.pooling_type=simple_non_param|model.dimensions=[512, 2000]|model.head_dims=[64, 80]", "model.pooling_type"),
    ("model.block.rope_theta=0", "model.block.rope_theta"),
    ("model.block.init_std_factor=deep", "model.block.init_std_factor"),
    ("model.block.n_kv_heads=3", "model.block.n_kv_heads"),
    ("model.sliding_windows=[0, 4096]", r"model.sliding_windows\[0\]"),
    ("model.residuals=[1]", r"model.residuals\[0\]"),
    ("model.residuals=[true, true]", "model.residuals"),
    ("data.regex.strategy={banana: 1@1}", "data.regex.strategy"),
    ("data.regex.strategy={word1: 1@1, word2: 2@1}", "data.regex.strategy"),
    ("data.seq_len=0", "data.seq_len"),
    ("data.sources={a: -1}", "data.sources.a"),
    ("data=3", "data"),
    ("distributed.fsdp_type=hybrid", "distributed.fsdp_type"),
    ("distributed.tp_size=2", "distributed.tp_size"),
    ("checkpoint.dump.every=0", "checkpoint.dump.every"),
    ("model.max_seqlens=[4096, 3200]", "model.max_seqlens"),
])
def test_invalid_values_name_the_key(override, key):
    raw = yaml.safe_load((CONFIGS / "aunet2_1b.yaml").read_text())
    with pytest.raises(ValueError, match=rf"^{key}: "):
        config_from_dict(raw, override.split("|"))


def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level must be a mapping"):
        load_config(listing)


def test_round_trip_through_a_plain_dict():
    args, _ = load_config(CONFIGS / "aunet3_1b.yaml")
    again, unused = config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(args))))
    assert again == args and unused == []


def test_defaults_are_valid_and_the_paper_aunet2():
    args = TrainArgs()
    assert args.model.dimensions == [512, 2048] and args.data.regex.strategy == {"word1": "1@1"}
    flat, _ = config_from_dict({"model": {"dimensions": [64], "layers": [2], "head_dims": [32],
                                          "sliding_windows": [-1], "max_seqlens": [-1], "residuals": []},
                                "data": {"regex": None}})
    assert flat.model.n_levels == 0
    assert ModelArgs(residuals=None).residuals == [True]
    assert ModelArgs(vocab_size=-1).vocab_size == 258
