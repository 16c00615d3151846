"""A training checkpoint -> one safetensors file plus its config, loadable without DeepSpeed
(`aunet export`; read back by `aunet.inference.export.load_model`, and as initial weights by
`checkpoint.init_ckpt_path`).

`export_checkpoint` gathers the ZeRO-partitioned fp32 weights (DeepSpeed's own zero_to_fp32
reader; DeepSpeed checkpoints are pickles, unpickled by that reader, so only checkpoints one
trusts, such as one's own runs', should be exported) and writes `model.safetensors` and
`config.yaml` (the whole training config, whose `model` and `data.regex.strategy` sections are
what generation and evaluation need).

DeepSpeed is imported inside `export_checkpoint`, after `ensure_ds_accelerator` has chosen its
accelerator (DeepSpeed fixes it when first imported).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import save_file

from aunet.model.convert import fuse_split_projections
from aunet.training.accelerator import ensure_ds_accelerator
from aunet.training.checkpoint import MARKER, latest_complete, tag_for

#: The files of an export directory.
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"


def export_checkpoint(checkpoints: Path, out: Path, step: int | None = None) -> Path:
    """Write step `step` (default: the newest complete one) of the checkpoint directory
    `checkpoints` to `out`/model.safetensors and `out`/config.yaml; returns the weights' path."""
    ensure_ds_accelerator()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    step = latest_complete(checkpoints) if step is None else step
    if step is None:
        raise FileNotFoundError(f"{checkpoints}: no complete checkpoint (a step_N directory with {MARKER})")
    directory = checkpoints / tag_for(step)
    if not (directory / MARKER).exists():
        raise FileNotFoundError(f"{directory}: not a complete checkpoint")
    info = json.loads((directory / MARKER).read_text())
    # A checkpoint saved before Q/K/V and W1/W3 were fused holds them split: exports are always fused.
    state = fuse_split_projections(get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag_for(step)))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS), metadata={"step": str(step), "format": "aunet"})
    (out / CONFIG).write_text(yaml.safe_dump(info["config"], sort_keys=False))
    return out / WEIGHTS
