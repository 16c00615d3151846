"""`checkpoint.init_ckpt_path`: a new run starts from the weights of an export or of another
run's training checkpoint. Only the weights: the optimizer, the learning-rate schedule's step and
the data position start fresh. A run that has a complete checkpoint of its own resumes from it
instead (the trainer decides; see `aunet.training.trainer.Trainer`).

Sources (`resolve`):

- an `aunet export` directory (`model.safetensors` + `config.yaml`), or its `model.safetensors`;
- a transformers directory made by `aunet export --format hf` (`model.safetensors` + an AU-Net
  `config.json`, read as JSON: the same tensors, the training config in three sections);
- a training checkpoint root (the directory holding `step_N/`: its newest complete checkpoint is
  taken), or one complete `step_N/` directory. These are DeepSpeed checkpoints, which are
  pickles: DeepSpeed's reader unpickles them (`torch.load(weights_only=False)`), which can run
  code stored in the file. Point init_ckpt_path only at checkpoints you trust; exports
  (safetensors + YAML) are safe to share.

Refused, with an `InitCheckpointError` that names the path: a path that does not exist or is
neither kind; an incomplete step directory; a source whose `model` section differs from this
run's (the differing keys are listed; only the initialisation settings in `INIT_ONLY` may
differ); another segmentation strategy list (compared in order, `same_strategy`) or tokenizer;
tensors whose names or shapes are not the model's parameters. Sources written before the Q/K/V
and W1/W3 projections were fused (separate `wq`, `wk`, `wv`, `w1`, `w3` tensors) are read
through `aunet.model.convert.fused_view`, which concatenates each group when it is read.

Memory (`load_into`): under ZeRO-3 no rank holds the whole model at any time. The model is
loaded before `deepspeed.initialize`, parameter by parameter: each one is gathered
(`GatheredParameters(modifier_rank=0)`), rank 0 copies in that one tensor read from the source,
and DeepSpeed re-partitions it from rank 0. Loading before `initialize` matters: the optimizer
takes its fp32 master copies from the parameters when it is built, so weights changed later would
be undone by the first step. The source is read one tensor at a time: safetensors' `safe_open`,
or DeepSpeed's zero_to_fp32 reader in lazy mode, which memory-maps the rank files and assembles
one parameter from its partitions when asked. (DeepSpeed's own
`engine.load_checkpoint(load_module_only=True)` is not used: under ZeRO-3 in DeepSpeed 0.19 it
builds the whole fp32 state dict on every rank, and from the checkpoint named by the `latest`
file rather than the requested tag.)
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open

from aunet.config import ConfigError, config_from_dict, to_dict
from aunet.config.hf_format import is_hf_dir, read_training_config
from aunet.model.convert import ConvertError, fused_view
from aunet.segment.strategy_order import describe_strategy, same_strategy
from aunet.training.checkpoint import MARKER, is_complete, latest_complete, step_of, tag_for
from aunet.training.consolidate import CONFIG as EXPORT_CONFIG
from aunet.training.consolidate import WEIGHTS as EXPORT_WEIGHTS

#: Model keys that only shape the initialisation, which the loaded weights replace.
INIT_ONLY = frozenset({"seed", "block.init_base_std", "block.init_std_factor"})


class InitCheckpointError(ValueError):
    """A `checkpoint.init_ckpt_path` that cannot initialise this run's model."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"checkpoint.init_ckpt_path: {path}: {reason}")


@dataclass
class InitSource:
    kind: str
    """``export``, ``hf`` (a transformers directory) or ``checkpoint``."""
    path: Path
    """The safetensors file of an export, or the step_N directory of a checkpoint."""
    step: int | None
    """The training step the weights are from (None for an export that does not say)."""
    config: dict[str, Any]
    """The source run's whole training config, as stored beside the weights."""

    def describe(self) -> str:
        where = self.path.parent if self.kind in ("export", "hf") else self.path
        return f"{where} ({self.kind}" + (f", step {self.step})" if self.step is not None else ")")


def resolve(path: str | Path, cfg) -> InitSource:
    """The source at `path`, checked against this run's config `cfg` (a TrainArgs). Reads only
    small files (configs, markers, the safetensors header), so every rank can call it."""
    given = Path(path)
    if not given.exists():
        raise InitCheckpointError(given, "does not exist")
    source = _locate(given)
    check_compatible(source, cfg, given)
    return source


def _locate(given: Path) -> InitSource:
    directory = given.parent if given.is_file() and given.name == EXPORT_WEIGHTS else given
    if (directory / EXPORT_WEIGHTS).is_file() and not (directory / EXPORT_CONFIG).is_file() and is_hf_dir(directory):
        try:
            config = read_training_config(directory)
        except ValueError as err:
            raise InitCheckpointError(given, str(err)) from None
        return InitSource("hf", directory / EXPORT_WEIGHTS, _export_step(directory / EXPORT_WEIGHTS), config)
    if (directory / EXPORT_WEIGHTS).is_file():
        if not (directory / EXPORT_CONFIG).is_file():
            raise InitCheckpointError(given, f"{EXPORT_WEIGHTS} without the {EXPORT_CONFIG} that `aunet export` writes beside it")
        config = yaml.safe_load((directory / EXPORT_CONFIG).read_text())
        if not isinstance(config, dict):
            raise InitCheckpointError(given, f"{directory / EXPORT_CONFIG} is not a training config (a YAML mapping)")
        return InitSource("export", directory / EXPORT_WEIGHTS, _export_step(directory / EXPORT_WEIGHTS), config)
    if not given.is_dir():
        raise InitCheckpointError(given, _NEITHER)
    named_step = step_of(given) is not None
    if named_step and (given / MARKER).exists() or any(given.glob("*_model_states.pt")):
        if not named_step or not is_complete(given):
            raise InitCheckpointError(given, f"not a complete checkpoint (no {MARKER}, or its files do not have the sizes it lists)")
        step_dir = given
    else:
        newest = latest_complete(given)
        if newest is None:
            if any(step_of(d) is not None for d in given.iterdir()):
                raise InitCheckpointError(given, f"no complete checkpoint (a step_N directory with {MARKER}) in this checkpoint directory")
            raise InitCheckpointError(given, _NEITHER)
        step_dir = given / tag_for(newest)
    marker = json.loads((step_dir / MARKER).read_text())
    if "config" not in marker:
        raise InitCheckpointError(step_dir, f"{MARKER} holds no training config to check the model against")
    return InitSource("checkpoint", step_dir, step_of(step_dir), marker["config"])


_NEITHER = (f"neither an `aunet export` directory ({EXPORT_WEIGHTS} + {EXPORT_CONFIG}, or + config.json from "
            f"`aunet export --format hf`) nor a training checkpoint directory (step_N/ directories with {MARKER}, or one of them)")


def _export_step(weights: Path) -> int | None:
    with safe_open(str(weights), framework="pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None and step.isdigit() else None


def check_compatible(source: InitSource, cfg, given: Path) -> None:
    """Refuse a source whose model, segmentation strategy or tokenizer is not this run's."""
    try:
        problems = incompatibilities(source.config, cfg, str(source.path))
    except ConfigError as e:
        raise InitCheckpointError(given, f"its stored training config does not load: {e}") from None
    if problems:
        raise InitCheckpointError(given, problems[0])


def incompatibilities(stored: dict, cfg, where: str, theirs_name: str = "the source") -> list[str]:
    """How the training config `stored` (a source's, or a checkpoint's) differs from this run's
    `cfg` in what the weights depend on: the model section (except `INIT_ONLY`), the
    segmentation strategy (in order) and the tokenizer; one sentence per kind. Raises
    ConfigError when `stored` does not load. Shared by `checkpoint.init_ckpt_path` and resume."""
    theirs, _ = config_from_dict(stored, source=where)
    problems = []
    ours_model, theirs_model = _flat(to_dict(cfg.model)), _flat(to_dict(theirs.model))
    differing = [k for k in sorted(ours_model.keys() | theirs_model.keys())
                 if k not in INIT_ONLY and ours_model.get(k) != theirs_model.get(k)]
    if differing:
        problems.append("its model is not this run's: " + "; ".join(
            f"model.{k}: {ours_model.get(k)} in this run, {theirs_model.get(k)} in {theirs_name}" for k in differing))
    ours_strategy = cfg.data.regex.strategy if cfg.data.regex is not None else None
    theirs_strategy = theirs.data.regex.strategy if theirs.data.regex is not None else None
    if not same_strategy(ours_strategy, theirs_strategy):
        problems.append(f"trained with another segmentation strategy: {describe_strategy(ours_strategy)} in this run "
                        f"(data.regex.strategy), {describe_strategy(theirs_strategy)} in {theirs_name}")
    if cfg.data.tokenizer.name != theirs.data.tokenizer.name:
        problems.append(f"trained on other tokens: data.tokenizer.name is {cfg.data.tokenizer.name} in this run, "
                        f"{theirs.data.tokenizer.name} in {theirs_name}")
    return problems


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@contextlib.contextmanager
def open_tensors(source: InitSource) -> Iterator[tuple[dict[str, tuple[int, ...]], Callable[[str], Any]]]:
    """(shape of every tensor by name, read(name) -> that one tensor, full and in fp32 for a
    checkpoint), reading nothing else into memory."""
    if source.kind in ("export", "hf"):  # the same safetensors layout
        with safe_open(str(source.path), framework="pt", device="cpu") as f:
            yield {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, f.get_tensor
        return
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # after ensure_ds_accelerator

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its per-rank progress output
        lazy = get_fp32_state_dict_from_zero_checkpoint(str(source.path.parent), tag=source.path.name, lazy_mode=True)
    yield {k: tuple(v.shape) for k, v in lazy.items()}, lambda name: lazy[name].contiguous()


def load_into(model, source: InitSource, rank: int) -> int:
    """Copy the source's weights into `model` (built, under ZeRO-3 partitioned, not yet handed
    to `deepspeed.initialize`); every rank calls it. Returns the number of tensors loaded."""
    import deepspeed  # after ensure_ds_accelerator (DeepSpeed fixes its accelerator on import)

    params = dict(model.named_parameters())
    with open_tensors(source) as (split_shapes, split_read):
        # A source saved before Q/K/V and W1/W3 were fused: fused here, one parameter at a time.
        try:
            shapes, read = fused_view(split_shapes, split_read)
        except ConvertError as err:
            raise InitCheckpointError(source.path, str(err)) from None
        ours = {name: tuple(getattr(p, "ds_shape", p.shape)) for name, p in params.items()}
        missing = sorted(ours.keys() - shapes.keys())
        unexpected = sorted(shapes.keys() - ours.keys())
        wrong = [f"{k} {shapes[k]} (model: {ours[k]})" for k in sorted(ours.keys() & shapes.keys()) if shapes[k] != ours[k]]
        if missing or unexpected or wrong:
            # Every rank reads the same header and raises here together, before any collective.
            raise InitCheckpointError(source.path, "its tensors are not this model's parameters: "
                                      f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}")
        with torch.no_grad():
            for name, p in params.items():
                if hasattr(p, "ds_id"):
                    with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                        if rank == 0:
                            p.data.copy_(read(name))
                else:  # ZeRO-0/1/2: every rank holds the whole model anyway
                    p.data.copy_(read(name))
    return len(params)
