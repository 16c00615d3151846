"""A training checkpoint -> one safetensors file plus its config, loadable without DeepSpeed.

`export_checkpoint` gathers the ZeRO-partitioned fp32 weights (DeepSpeed's own
zero_to_fp32 reader; DeepSpeed checkpoints are pickles, unpickled by that reader, so only
checkpoints one trusts, such as one's own runs', should be exported) and writes
`model.safetensors` and `config.yaml` (the whole training config, whose `model` and
`data.regex.strategy` sections are what generation and evaluation need). `load_model` reads
them back with safetensors and `yaml.safe_load`: no pickle.

`load_model` also reads a transformers directory written by `aunet export --format hf`
(`aunet.hf`): the same `model.safetensors` tensors, with the training config in `config.json`
(read as plain JSON: transformers is not needed to load it here).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from aunet.training.checkpoint import MARKER, latest_complete, tag_for

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def export_checkpoint(checkpoints: Path, out: Path, step: int | None = None) -> Path:
    from aunet.training.accelerator import ensure_ds_accelerator

    ensure_ds_accelerator()
    import json

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    step = latest_complete(checkpoints) if step is None else step
    if step is None:
        raise FileNotFoundError(f"{checkpoints}: no complete checkpoint (a step_N directory with {MARKER})")
    directory = checkpoints / tag_for(step)
    if not (directory / MARKER).exists():
        raise FileNotFoundError(f"{directory}: not a complete checkpoint")
    info = json.loads((directory / MARKER).read_text())
    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag_for(step))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS), metadata={"step": str(step), "format": "aunet"})
    (out / CONFIG).write_text(yaml.safe_dump(info["config"], sort_keys=False))
    return out / WEIGHTS


def load_model(path: str | Path, device: str = "cpu"):
    """(model, config) from an export directory, or a transformers one made by
    `aunet export --format hf` (or either's model.safetensors)."""
    from safetensors.torch import load_file

    from aunet.config import config_from_dict
    from aunet.hf.format import HF_CONFIG, is_hf_dir, read_training_config
    from aunet.model import HierarchicalTransformer

    path = Path(path)
    directory = path.parent if path.is_file() else path
    if (directory / WEIGHTS).is_file() and not (directory / CONFIG).is_file() and is_hf_dir(directory):
        cfg, _ = config_from_dict(read_training_config(directory), source=str(directory / HF_CONFIG))
    elif not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"{directory}: expected {WEIGHTS} and {CONFIG} (made by `aunet export`), "
                                f"or {WEIGHTS} and an AU-Net {HF_CONFIG} (made by `aunet export --format hf`)")
    else:
        cfg, _ = config_from_dict(yaml.safe_load((directory / CONFIG).read_text()), source=str(directory / CONFIG))
    model = HierarchicalTransformer(cfg.model)
    missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS), device=device), strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg
