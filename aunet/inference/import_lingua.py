"""`aunet import-lingua`: a reference (facebookresearch/lingua, apps/aunet) checkpoint -> an
`aunet export` directory (model.safetensors + config.yaml), which `aunet generate`, `aunet eval`,
`aunet export --format hf` and `checkpoint.init_ckpt_path` load.

A lingua checkpoint directory (`<dump_dir>/checkpoints/0000002000/`, as lingua's
`CheckpointManager.save` writes it) is a torch distributed checkpoint (`.metadata` plus
`__R_0.distcp` files, holding ``{"model": ..., "optim": ...}``) with the run's whole config in
`params.json`. Only the ``model.`` tensors are read (`torch.distributed.checkpoint.load` in one
process, without a process group), mapped by `aunet.model.convert.from_lingua` and written with
safetensors. The config is built from the reference's `model` section (`model_args_from_lingua`,
with the reference's defaults where the file leaves a key out: its RoPE base is 10000, ours
500000) plus the `data` keys that generation and evaluation read (seq_len, tokenizer,
regex.strategy, add_bos, add_eos) and the run's name and seed; the optimizer, schedule and the
rest do not carry over (they are lingua's, and a run started from the export sets its own).

Trust: DCP's `.metadata` file is a pickle (torch reads it with `pickle.load`), which can run code
stored in it; the tensor files are read with `torch.load(weights_only=True)`. Import only
checkpoints you trust; share the export it writes (safetensors + YAML).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from aunet.config import ModelArgs, config_from_dict, to_dict
from aunet.config.errors import ConfigError
from aunet.config.load import build
from aunet.model.convert import from_lingua
from aunet.training.consolidate import CONFIG, WEIGHTS

#: What lingua writes beside the tensors (lingua/checkpoint.py: CONFIG_NAME).
PARAMS = "params.json"
#: lingua's step directories: ten digits (lingua/checkpoint.py: FOLDER_NAME).
STEP_DIR = re.compile(r"\d{10}")

#: The reference's `model` keys (HierarchicalArgs) and `model.block` keys (BaseTransformerArgs).
MODEL_KEYS = frozenset({"dimensions", "head_dims", "layers", "sliding_windows", "max_seqlens", "residuals", "block",
                        "pooling_type", "seed", "vocab_size", "lambda_level", "norm_eps"})
BLOCK_KEYS = frozenset({"dim", "n_layers", "head_dim", "n_heads", "n_kv_heads", "ffn_dim_multiplier", "multiple_of",
                        "norm_eps", "rope_theta", "init_base_std", "init_std_factor", "max_seqlen"})
#: Block keys the reference sets per stage from the model section, whatever the block says.
PER_STAGE = frozenset({"dim", "n_layers", "head_dim", "max_seqlen"})
#: The reference's defaults (apps/aunet HierarchicalArgs, lingua/transformer.py
#: BaseTransformerArgs), for keys a params.json leaves out: several are not ours (its RoPE base is
#: 10000, ours 500000; it has no default window, ours is the paper's).
REFERENCE_MODEL_DEFAULTS = {"sliding_windows": None, "residuals": None, "pooling_type": "simple_indexed_matmul",
                            "seed": 42, "vocab_size": -1, "lambda_level": 0.0, "norm_eps": 1e-5}
REFERENCE_BLOCK_DEFAULTS = {"n_kv_heads": None, "ffn_dim_multiplier": None, "multiple_of": 256, "norm_eps": 1e-5,
                            "rope_theta": 10000.0, "init_base_std": None, "init_std_factor": "disabled"}
DATA_KEYS = ("seq_len", "add_bos", "add_eos", "tokenizer", "regex")


class LinguaImportError(ValueError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")


def checkpoint_dir(path: Path) -> Path:
    """`path` itself when it is a DCP directory, else its newest ten-digit step directory that is."""
    if (path / ".metadata").is_file():
        return path
    if not path.is_dir():
        raise LinguaImportError(path, "does not exist" if not path.exists() else "not a directory")
    steps = sorted(d for d in path.iterdir() if STEP_DIR.fullmatch(d.name) and (d / ".metadata").is_file())
    if not steps:
        raise LinguaImportError(path, "not a lingua checkpoint: no .metadata (torch distributed checkpoint), nor step "
                                "directories (0000002000/ ...) holding one")
    return steps[-1]


def model_args_from_lingua(model: dict[str, Any], where: str = "model") -> ModelArgs:
    """Our `ModelArgs` for the reference's `model` section (a dict as in its params.json)."""
    unknown = sorted(set(model) - MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "not a key of the reference's model section (HierarchicalArgs)")
    block = dict(model.get("block") or {})
    unknown = sorted(set(block) - BLOCK_KEYS)
    if unknown:
        raise ConfigError(f"{where}.block.{unknown[0]}", "not a key of the reference's block (BaseTransformerArgs)")
    for key in ("dimensions", "head_dims", "layers", "max_seqlens"):
        if model.get(key) is None:
            raise ConfigError(f"{where}.{key}", "missing (the reference needs it; it has no default)")
    n_heads = block.pop("n_heads", None)
    if n_heads is not None:
        for i, (d, hd) in enumerate(zip(model["dimensions"], model["head_dims"])):
            if n_heads * hd != d:
                raise ConfigError(f"{where}.block.n_heads", f"{n_heads} heads of {hd} at stage {i} are not its width {d}; "
                                  "aunet's stages have dimensions[i] / head_dims[i] heads")
    ours_block = {**REFERENCE_BLOCK_DEFAULTS, **{k: v for k, v in block.items() if k not in PER_STAGE}}
    ours = {**REFERENCE_MODEL_DEFAULTS, **{k: v for k, v in model.items() if k != "block"}}
    if ours.get("sliding_windows") is not None:  # the reference's None (no window) is our -1
        ours["sliding_windows"] = [-1 if w is None else w for w in ours["sliding_windows"]]
    unused: list[str] = []
    args = build(ModelArgs, {**ours, "block": ours_block}, where, unused)
    assert not unused, unused  # every key was checked against the reference's above
    return args


def our_config(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Our whole training config (as a dict) for the reference run's params.json."""
    model = model_args_from_lingua(params.get("model") or {}, f"{where}: model")
    data = params.get("data") or {}
    raw = {"name": params.get("name", "lingua"), "seed": params.get("seed", 42),
           "data": {k: data[k] for k in DATA_KEYS if k in data}, "model": to_dict(model)}
    cfg, _ = config_from_dict(raw, source=where)
    return to_dict(cfg)


def read_model_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """The ``model.`` tensors of a torch distributed checkpoint, prefix removed, in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory))
    metadata = reader.read_metadata()
    wanted = {k: m for k, m in metadata.state_dict_metadata.items() if k.startswith("model.")}
    if not wanted:
        raise LinguaImportError(directory, "holds no model.* tensors (lingua saves {'model': ..., 'optim': ...})")
    state: dict[str, torch.Tensor] = {}
    for key, meta in wanted.items():
        if not isinstance(meta, TensorStorageMetadata):
            raise LinguaImportError(directory, f"{key}: not a tensor")
        state[key] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    with warnings.catch_warnings():  # "no process group: loading in one process", which is the intent
        warnings.filterwarnings("ignore", message=".*single process")
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {k[len("model."):]: v for k, v in state.items()}


def import_lingua(path: str | Path, out: str | Path) -> Path:
    """Write `out`/model.safetensors + `out`/config.yaml from the lingua checkpoint at `path`
    (a step directory, or the checkpoints directory: its newest step). Returns the weights' path."""
    directory = checkpoint_dir(Path(path))
    params_path = directory / PARAMS
    if not params_path.is_file():
        raise LinguaImportError(directory, f"no {PARAMS} (lingua writes the run's config there)")
    try:
        params = json.loads(params_path.read_text())
    except ValueError as err:
        raise LinguaImportError(params_path, f"not JSON ({err})") from None
    config = our_config(params, str(params_path))
    args, _ = config_from_dict(config, source=str(params_path))
    tensors = from_lingua(read_model_tensors(directory), args.model)
    step = directory.name.lstrip("0") or "0" if STEP_DIR.fullmatch(directory.name) else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "aunet", "source": "lingua"} | ({"step": step} if step is not None else {})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / WEIGHTS), metadata=metadata)
    (out / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    return out / WEIGHTS
