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
    if (directory / WEIGHTS).is_file() and not (directory / CONFIG).is_file() and is_hf_dir(directory):
        cfg, _ = config_from_dict(read_training_config(directory), source=str(directory / HF_CONFIG))
    elif not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"{directory}: expected {WEIGHTS} and {CONFIG} (made by `aunet export`), "
                                f"or {WEIGHTS} and an AU-Net {HF_CONFIG} (made by `aunet export --format hf`)")
    else:
        cfg, _ = config_from_dict(yaml.safe_load((directory / CONFIG).read_text()), source=str(directory / CONFIG))
    model = HierarchicalTransformer(cfg.model)
    # Files written before Q/K/V and W1/W3 were fused hold them split: fused here, on load.
    state = fuse_split_projections(load_file(str(directory / WEIGHTS), device=device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), cfg
