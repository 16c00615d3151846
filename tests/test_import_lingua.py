"""`aunet import-lingua`: a checkpoint directory as the reference (lingua, apps/aunet) writes it, a
torch distributed checkpoint of {"model", "optim"} plus params.json, becomes an `aunet export`."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from aunet.cli import main
from aunet.config import BlockArgs, ConfigError
from aunet.inference.export import load_model
from aunet.inference.import_lingua import model_args_from_lingua
from aunet.model import HierarchicalTransformer
from lingua_layout import to_lingua
from model_helpers import text_batch, tiny_args

STRATEGY = {"word1": "1@1", "word2": "2@1"}


def lingua_params(args) -> dict:
    """params.json as lingua writes it: its whole TrainArgs resolved by OmegaConf, defaults
    included (block.dim, n_layers, max_seqlen: set per stage by the model, ignored), with
    sections aunet has no use for (profiling, env, optimizer details)."""
    return {
        "name": "tiny_lingua", "dump_dir": "/runs/tiny", "seed": 777, "grad_acc_steps": 1, "steps": 100, "probe_freq": None,
        "data": {"root_dir": "/data", "sources": {"dclm": 1.0}, "batch_size": 4, "seq_len": 64, "n_views": 2, "seed": 42,
                 "add_bos": True, "add_eos": True, "load_async": True, "prefetch_size": 64,
                 "tokenizer": {"name": "bytes", "path": None}, "regex": {"strategy": STRATEGY}},
        "optim": {"lr": 0.0011, "weight_decay": 0.1, "epsilon": 1e-8, "beta1": 0.9, "beta2": 0.95, "clip": 0.2,
                  "scheduler": "cosine", "warmup": 10, "lr_min_ratio": 0.001, "cycle_length": 1.0, "cosine_theta": 1.0},
        "model": {"dimensions": args.dimensions, "head_dims": args.head_dims, "layers": args.layers,
                  "sliding_windows": [8, None, 8], "max_seqlens": [64, -1, -1], "residuals": [True, True],
                  "block": {"dim": 512, "n_layers": 8, "head_dim": None, "n_heads": None, "n_kv_heads": args.block.n_kv_heads,
                            "ffn_dim_multiplier": None, "multiple_of": 16, "norm_eps": 1e-5, "rope_theta": 10000.0,
                            "init_base_std": None, "init_std_factor": "disabled", "max_seqlen": 1024},
                  "pooling_type": args.pooling_type, "seed": 42, "vocab_size": 258, "lambda_level": 0.0, "norm_eps": 1e-5},
        "distributed": {"dp_shard": 1, "dp_replicate": 8, "tp_size": 1, "selective_activation_checkpointing": False,
                        "compile": True, "fsdp_type": "full_shard", "model_dtype": "bf16", "float8_recipe": None},
        "env": {"MKL_SERVICE_FORCE_INTEL": "GNU", "OMP_NUM_THREADS": "1"},
        "checkpoint": {"dump": {"every": 2000, "keep": 1}, "eval": {"every": 50000, "keep": 1}, "path": "/runs/tiny/checkpoints"},
        "profiling": {"run": True, "mem_warmup": 0}, "logging": {"freq": 1, "wandb": None}, "async_eval_gpus": 8,
        "eval": {"harness": {"tasks": ["hellaswag"]}, "generator": {"max_tokens": 16384, "dtype": "bf16"}},
    }


def write_lingua_checkpoint(root, args, step: int, seed: int = 0):
    """lingua's CheckpointManager.save in one process: dcp.save({"model", "optim"}) into
    <checkpoints>/<step as 10 digits>/, then params.json and train_state_00000.json."""
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(seed)
    model = HierarchicalTransformer(args)
    weights = to_lingua(model.state_dict(), args)
    optim = {"state": {k: {"exp_avg": torch.randn_like(v, dtype=torch.float32), "step": torch.tensor(3.0)}
                       for k, v in list(weights.items())[:3]}, "param_groups": [{"lr": 1e-3, "params": list(weights)[:3]}]}
    directory = root / f"{step:010d}"
    with warnings.catch_warnings():  # "no process group: saving as one process", which is the point here
        warnings.simplefilter("ignore")
        dcp.save({"model": weights, "optim": optim}, checkpoint_id=str(directory), no_dist=True)
    (directory / "params.json").write_text(json.dumps(lingua_params(args)))
    (directory / "train_state_00000.json").write_text(json.dumps({"step": step, "acc_step": 0}))
    return model


def test_a_lingua_checkpoint_imports_with_equal_logits_and_generates(tmp_path, capsys):
    args = tiny_args(2, "simple_indexed_matmul", sliding_windows=[8, -1, 8], max_seqlens=[64, -1, -1],
                     block=BlockArgs(multiple_of=16, rope_theta=10000.0, n_kv_heads=1))
    write_lingua_checkpoint(tmp_path / "checkpoints", args, 1000, seed=3)
    original = write_lingua_checkpoint(tmp_path / "checkpoints", args, 2000, seed=0)  # the newest: taken
    assert main(["import-lingua", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "export")]) == 0
    model, cfg = load_model(tmp_path / "export")
    assert cfg.model == args and cfg.data.regex.strategy == STRATEGY and cfg.data.seq_len == 64 and cfg.name == "tiny_lingua"
    tokens, levels = text_batch(2, 48)
    with torch.no_grad():
        got, want = model(tokens, levels)[0], original.eval()(tokens, levels)[0]
    # fp32 weights copied unchanged into the same model: equal within 1e-5 (in practice to the bit).
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "export"), "--prompt", "The ", "--max-bytes", "4",
                 "--temperature", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out


def test_a_checkpoint_whose_tensors_do_not_fit_its_config_is_refused_naming_the_key(tmp_path, capsys):
    args = tiny_args(2, "simple_indexed_matmul", sliding_windows=[8, -1, 8], max_seqlens=[64, -1, -1])
    write_lingua_checkpoint(tmp_path, args, 10)
    params = json.loads((tmp_path / "0000000010" / "params.json").read_text())
    params["model"]["pooling_type"] = "simple_repeat"  # the weights have indexed_linear, not pos_encoding
    (tmp_path / "0000000010" / "params.json").write_text(json.dumps(params))
    assert main(["import-lingua", str(tmp_path / "0000000010"), "--out", str(tmp_path / "out")]) == 1
    assert "transitions.0.indexed_linear.weight: not a parameter" in capsys.readouterr().err
    assert main(["import-lingua", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_reference_model_sections_map_with_the_reference_defaults():
    section = {"dimensions": [32, 64], "head_dims": [16, 16], "layers": [1, 1], "max_seqlens": [-1, 32],
               "block": {"multiple_of": 16}}
    args = model_args_from_lingua(section)
    assert args.block.rope_theta == 10000.0  # lingua's default, not ours (500000)
    assert args.sliding_windows == [-1, -1] and args.residuals == [True]
    assert model_args_from_lingua({**section, "head_dims": [16, 32], "block": {"n_heads": 2, "rope_theta": 5.0}}).block.rope_theta == 5.0
    with pytest.raises(ConfigError, match=r"block\.n_heads"):
        model_args_from_lingua({**section, "block": {"n_heads": 4}})  # 4 heads of 16 are not 32 wide
    with pytest.raises(ConfigError, match=r"model\.poolng_type"):
        model_args_from_lingua({**section, "poolng_type": "simple"})
    with pytest.raises(ConfigError, match=r"model\.head_dims"):
        model_args_from_lingua({k: v for k, v in section.items() if k != "head_dims"})
