"""Load an exported model without DeepSpeed: `load_model` reads `model.safetensors` with
safetensors and the training config with `yaml.safe_load` (no pickle). The export is written by
`aunet.training.consolidate.export_checkpoint` (`aunet export`), re-exported here.

`load_model` also reads a transformers directory written by `aunet export --format hf`
(`aunet.hf`): the same `model.safetensors` tensors, with the training config in `config.json`
(read as plain JSON: transformers is not needed to load it here).

Files from before the fused projections (separate `wq`/`wk`/`wv` and `w1`/`w3` tensors) load
too: `aunet.model.convert.fuse_split_projections` stacks them on the way in.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import load_file

from aunet.config import config_from_dict
from aunet.config.hf_format import HF_CONFIG, is_hf_dir, read_training_config
from aunet.model import HierarchicalTransformer
from aunet.model.convert import fuse_split_projections
from aunet.training.consolidate import CONFIG, WEIGHTS, export_checkpoint

__all__ = ["CONFIG", "WEIGHTS", "export_checkpoint", "load_model"]


def load_model(path: str | Path, device: str = "cpu"):
    """(model, config) from an export directory, or a transformers one made by
    `aunet export --format hf` (or either's model.safetensors)."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    weights = directory / WEIGHTS
    hf_only = weights.is_file() and not (directory / CONFIG).is_file() and (directory / HF_CONFIG).is_file()
    if hf_only and (is_hf_dir(directory) or not_json(directory / HF_CONFIG)):
        # read_training_config names the file when it is not UTF-8 or not JSON.
        cfg, _ = config_from_dict(read_training_config(directory), source=str(directory / HF_CONFIG))
    elif not weights.is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"{directory}: expected {WEIGHTS} and {CONFIG} (made by `aunet export`), "
                                f"or {WEIGHTS} and an AU-Net {HF_CONFIG} (made by `aunet export --format hf`)")
    else:
        cfg, _ = config_from_dict(read_yaml(directory / CONFIG), source=str(directory / CONFIG))
    model = HierarchicalTransformer(cfg.model)
    try:
        tensors = load_file(str(weights), device=device)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every damage
        raise ValueError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e}); "
                         "truncated or damaged: export it again") from None
    # Files written before Q/K/V and W1/W3 were fused hold them split: fused here, on load.
    state = fuse_split_projections(tensors)
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (the config makes {tuple(expected[k].shape)})"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{weights}: {len(wrong)} weights have another shape than the config's model: {'; '.join(wrong[:3])}"
                         f"{' ...' if len(wrong) > 3 else ''}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg


def not_json(path: Path) -> bool:
    try:
        json.loads(path.read_bytes().decode("utf-8"))
        return False
    except (ValueError, OSError):
        return True


def read_yaml(path: Path):
    """An export's config.yaml, or an error naming it (not UTF-8, not YAML)."""
    try:
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
