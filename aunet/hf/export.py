"""`aunet export --format hf`: a directory that transformers loads with the Auto classes.

    OUT/config.json              AUNetConfig (aunet's model section, strategy list, training config),
                                 auto_map -> configuration_aunet / modeling_aunet
    OUT/model.safetensors        the weights, under aunet's parameter names (as `aunet export`)
    OUT/generation_config.json   BOS/EOS/pad ids; BOS is never generated
    OUT/tokenizer_config.json    auto_map -> tokenization_aunet
    OUT/special_tokens_map.json
    OUT/configuration_aunet.py, modeling_aunet.py, tokenization_aunet.py   (copied from aunet/hf/)
    OUT/README.md                the model card

Written from an `aunet export` directory (`export_hf_from_export`) or from a run's ZeRO
checkpoints (`export_hf`, which first gathers them as `aunet export` does, into a temporary
directory). Nothing here imports transformers: the files are plain JSON, so exporting needs
only aunet; loading needs transformers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from aunet.config import config_from_dict
from aunet.config.hf_format import MODEL_TYPE, sections
from aunet.inference.export import CONFIG, WEIGHTS, export_checkpoint
from aunet.model.convert import fuse_split_projections
from aunet.segment.strategy_order import describe_strategy

HERE = Path(__file__).resolve().parent
CODE_FILES = ("configuration_aunet.py", "modeling_aunet.py", "tokenization_aunet.py")


def export_hf(checkpoints: Path, out: Path, step: int | None = None) -> Path:
    """From a run's checkpoint directory; the model card gets the run's held-out bpb at that
    step when its metrics.jsonl (beside the checkpoint directory) has one."""
    with tempfile.TemporaryDirectory(prefix="aunet-export-") as tmp:
        weights = export_checkpoint(Path(checkpoints), Path(tmp), step)
        return export_hf_from_export(weights.parent, out, run_dir=Path(checkpoints).parent)


def export_hf_from_export(export_dir: Path, out: Path, run_dir: Path | None = None) -> Path:
    """From an `aunet export` directory (model.safetensors + config.yaml)."""


    export_dir, out = Path(export_dir), Path(out)
    if not (export_dir / WEIGHTS).is_file() or not (export_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{export_dir}: expected {WEIGHTS} and {CONFIG} (made by `aunet export`)")
    raw = yaml.safe_load((export_dir / CONFIG).read_text())
    cfg, _ = config_from_dict(raw, source=str(export_dir / CONFIG))  # refuses a config aunet cannot load
    if cfg.data.tokenizer.name != "bytes":
        raise ValueError(f"{export_dir / CONFIG}: the transformers format is for byte-level models; this one reads "
                         f"{cfg.data.tokenizer.name} tokens (data.tokenizer.name)")
    with safe_open(str(export_dir / WEIGHTS), framework="pt") as f:
        meta = dict(f.metadata() or {})
        # An export from before the fused projections: the directory gets today's layout.
        tensors = fuse_split_projections({k: f.get_tensor(k) for k in f.keys()})
    step = int(meta["step"]) if meta.get("step", "").isdigit() else None
    out.mkdir(parents=True, exist_ok=True)
    # transformers reads only safetensors files that say they hold PyTorch tensors.
    save_file(tensors, str(out / WEIGHTS), metadata={**meta, "format": "pt"})
    for name in CODE_FILES:
        shutil.copyfile(HERE / name, out / name)
    n_params = sum(t.numel() for t in tensors.values())
    _write_json(out / "config.json", hf_config(raw, step))
    _write_json(out / "generation_config.json", {
        "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 257, "do_sample": False,
        "max_new_tokens": 256, "suppress_tokens": [256], "transformers_version": _transformers_version()})
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "AUNetTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_aunet.AUNetTokenizer", None]},
        "bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|eos|>",
        "add_bos_token": True, "add_eos_token": False, "split_special_tokens": True, "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": cfg.model.max_seqlens[0] if cfg.model.max_seqlens[0] != -1 else cfg.eval.generator.max_tokens})
    _write_json(out / "special_tokens_map.json", {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|eos|>"})
    bpb = held_out_bpb(run_dir, step) if run_dir is not None else None
    (out / "README.md").write_text(model_card(raw, cfg, step, n_params, bpb))
    return out


# A byte-level chat format: each message as "<role>: text" on its own lines, and the assistant's
# turn opened when a reply is asked for. No special tokens: the model sees these bytes as text
# (BOS comes from the tokenizer), so any byte model can be served for chat; a model fine-tuned
# on another format replaces it in tokenizer_config.json.
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def hf_config(raw: dict[str, Any], step: int | None) -> dict[str, Any]:
    """config.json: `AUNetConfig`'s fields and the auto_map that names the code files."""

    return {
        "model_type": MODEL_TYPE,
        "architectures": ["AUNetForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_aunet.AUNetConfig",
                     "AutoModelForCausalLM": "modeling_aunet.AUNetForCausalLM"},
        **sections(raw),
        "aunet_step": step,
        "vocab_size": 258, "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 257,
        "tie_word_embeddings": False, "use_cache": True, "dtype": "float32",
        "transformers_version": _transformers_version(),
    }


def held_out_bpb(run_dir: Path, step: int | None) -> dict[str, float] | None:
    """The run's last validation record at or before `step` (metrics.jsonl), if any."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    best = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val_bpb" in record and (step is None or record.get("step", 0) <= step):
            best = {"step": record["step"], "bpb": record["val_bpb"]}
    return best


def model_card(raw: dict[str, Any], cfg, step: int | None, n_params: int, bpb: dict | None) -> str:

    m = cfg.model
    strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
    d = cfg.data
    sources = ", ".join(f"{k} (weight {v})" for k, v in d.sources.items()) or "not recorded"
    seen = f"{step} steps x {d.batch_size} sequences x {d.seq_len} bytes per rank" if step is not None else "not recorded"
    held = (f"{bpb['bpb']:.4f} bits per byte on the run's validation sources at step {bpb['step']}"
            if bpb else "not recorded with this export")
    return f"""---
library_name: transformers
tags: [aunet, byte-level, autoregressive-u-net]
---
# {cfg.name}: AU-Net (Autoregressive U-Net), byte level

An AU-Net ("From Bytes to Ideas: Language Modeling with Autoregressive U-Nets", arXiv 2506.14761)
trained with [aunet](https://github.com/) (an open implementation). It reads raw UTF-8 bytes: ids
0-255 are bytes, 256 is BOS, 257 is EOS (also the padding id). No tokenizer model is involved.

## Requirements

The modeling code runs aunet's own model and its Rust segmenter, so **`aunet` must be installed**
(`pip install aunet`, or `pip install -e .` in its repository) besides `transformers` and `torch`.
Loading needs `trust_remote_code=True` (the code is the `*_aunet.py` files in this directory).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)
batch = tok(["The cat", "Once upon a"], return_tensors="pt", padding=True)
out = model.generate(**batch, max_new_tokens=64, do_sample=False)
print(tok.batch_decode(out, skip_special_tokens=True))
```

## Architecture

- {m.n_levels} pooling level(s), {n_params:,} parameters; stage widths {m.dimensions}, layers {m.layers}
  (encoder and decoder of each stage, trunk last), head sizes {m.head_dims}
- sliding windows {m.sliding_windows}, max positions per stage {m.max_seqlens}, pooling `{raw['model'].get('pooling_type')}`
- segmentation strategy (stage order): `{describe_strategy(strategy)}`; the model computes the levels
  itself from the input bytes (prompt: full-document levels; generated bytes: causal stream levels)

## Training data

- sources: {sources}
- {seen}{f", exported at step {step}" if step is not None else ""}
- documents encoded as BOS + bytes + EOS: add_bos {d.add_bos}, add_eos {d.add_eos}

## Evaluation

- held-out: {held}
"""


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _transformers_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None
