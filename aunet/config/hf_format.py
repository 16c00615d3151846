"""The transformers directory format, read and written without transformers.

config.json keeps aunet's training config in three sections (`AUNetConfig` declares them):
``aunet_model`` (the `model:` section), ``aunet_strategy`` (the segmentation strategy list as
``[key, parameter]`` pairs in stage order: a JSON list, since the order is the meaning, SPEC
section 2; null for a flat model) and ``aunet_training`` (everything else, without
``data.regex``). `training_config` puts them back together, so `aunet.inference.export.load_model`
and `checkpoint.init_ckpt_path` read such a directory as they read an `aunet export`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HF_CONFIG = "config.json"
MODEL_TYPE = "aunet"


def sections(config: Mapping[str, Any]) -> dict[str, Any]:
    """A whole training config -> the three config.json sections."""
    training = {k: v for k, v in config.items() if k != "model"}
    data = dict(training.get("data") or {})
    regex = data.pop("regex", None)
    training["data"] = data
    return {"aunet_model": dict(config["model"]),
            "aunet_strategy": None if not regex else [[k, v] for k, v in regex["strategy"].items()],
            "aunet_training": training}


def training_config(hf: Mapping[str, Any], where: str = HF_CONFIG) -> dict[str, Any]:
    """config.json's sections -> the whole training config (what `config_from_dict` reads)."""
    if hf.get("model_type") != MODEL_TYPE or not isinstance(hf.get("aunet_model"), Mapping):
        raise ValueError(f"{where}: not an AU-Net config (model_type {hf.get('model_type')!r}, "
                         "expected 'aunet' with an aunet_model section)")
    pairs = hf.get("aunet_strategy")
    if pairs is not None and (not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 for p in pairs)):
        raise ValueError(f"{where}: aunet_strategy must be a list of [key, parameter] pairs, got {pairs!r}")
    keys = [str(k) for k, _ in pairs or ()]
    if len(set(keys)) != len(keys):
        # A mapping keeps one value per key: a repeated key would load as fewer stages.
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{where}: aunet_strategy repeats the key(s) {', '.join(map(repr, repeated))}: each stage "
                         f"needs a key of its own (e.g. word1, word2), got {pairs!r}")
    config = dict(hf.get("aunet_training") or {})
    data = dict(config.get("data") or {})
    data["regex"] = None if pairs is None else {"strategy": {str(k): v for k, v in pairs}}
    config["data"] = data
    config["model"] = dict(hf["aunet_model"])
    return config


def read_training_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / HF_CONFIG
    try:
        hf = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}): not a config.json") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: not a JSON object")
    return training_config(hf, str(path))


def is_hf_dir(directory: Path) -> bool:
    """A directory written by `aunet export --format hf` (config.json of model_type aunet)."""
    path = Path(directory) / HF_CONFIG
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):  # ValueError: not JSON, or not UTF-8
        return False
