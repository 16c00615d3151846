"""Parameter layouts that are not ours, mapped to ours. Pure functions of named tensors, so they
apply to weights and to gradients alike.

Our blocks run Q/K/V as one matmul (`attention.wqkv`, rows wq, wk, wv stacked) and the SwiGLU
gate and up projections as one (`feed_forward.w13`, rows w1 then w3). Everything else carries the
reference's names (facebookresearch/lingua, apps/aunet), so two layouts reach us with the split
projections:

- `from_lingua`: a reference model's state dict (names as its `HierarchicalTransformer` has
  them: tok_embeddings, encoders.i / trunk / decoders.i `.layers.j.attention.{wq,wk,wv,wo}`,
  `.feed_forward.{w1,w2,w3}`, attention_norm, ffn_norm, transitions.i.{down_norm, trans_down,
  up_norm, trans_up, indexed_linear, indexed_norm, pos_encoding}, vocab_norm, vocab,
  level_mask_norm, level_mask). Checked against the model `args` describes: every parameter must
  be there with its shape, and a name that is neither a parameter nor one of the reference's
  derived buffers is refused, named.
- `fuse_split_projections`: our own files written before the fusion (exports, transformers
  directories, training checkpoints read by `checkpoint.init_ckpt_path`); the same names, so the
  same fusion. `fused_view` does it lazily, one tensor at a time, for readers that never hold a
  whole state dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from aunet.config.model import ModelArgs

#: A fused parameter (the end of its name) and the split ones whose rows it stacks, in order.
FUSED: dict[str, tuple[str, ...]] = {
    "attention.wqkv.weight": ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
    "feed_forward.w13.weight": ("feed_forward.w1.weight", "feed_forward.w3.weight"),
}
_PART_OF = {part: (fused, i) for fused, parts in FUSED.items() for i, part in enumerate(parts)}

#: Module-name segments added by wrappers around the reference model (torch.compile, activation
#: checkpointing, FSDP) when its state dict is taken from the wrapped module: not part of a name.
_WRAPPERS = frozenset({"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"})

#: The reference's buffers that hold no learned state (recomputed from the widths and the
#: sequence length): dropped. features_weight / expand_idx are persistent buffers of its
#: non-parametric transitions; the others are non-persistent but harmless if saved.
_DERIVED_BUFFERS = re.compile(r"^transitions\.\d+\.(features_weight|expand_idx|position)$"
                              r"|^(encoders\.\d+|decoders\.\d+|trunk)\.rope_embeddings\.freqs_cis$")


#: Recorded in each training checkpoint's marker: the parameter layout its optimizer state is in.
#: Checkpoints without it were saved with the split projections; ZeRO keeps its fp32 master
#: weights and moments per parameter partition, so they cannot be resumed into the fused model
#: (their weights can start a run: `checkpoint.init_ckpt_path`).
PARAM_LAYOUT = "fused-wqkv-w13"


class ConvertError(ValueError):
    """A state dict that does not map onto the model: the message names the key."""


def _split_name(name: str) -> tuple[str, str, int] | None:
    """(fused name, fused suffix, row block) when `name` is a split projection."""
    for part, (suffix, i) in _PART_OF.items():
        if name == part or name.endswith("." + part):
            return name[: len(name) - len(part)] + suffix, suffix, i
    return None


def _fused_suffix(name: str) -> str | None:
    return next((k for k in FUSED if name == k or name.endswith("." + k)), None)


def fuse_split_projections(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with each group of split projections (wq, wk, wv; w1, w3) replaced by its
    fused tensor, rows concatenated in that order; other entries (fused ones included) pass
    through unchanged. A group with a member missing is refused, naming it."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        split = _split_name(name)
        if split is None:
            out[name] = tensor
        else:
            groups.setdefault(split[0], {})[split[2]] = tensor
    for fused, parts in groups.items():
        suffix = _fused_suffix(fused)
        assert suffix is not None
        prefix = fused[: len(fused) - len(suffix)]
        missing = [prefix + n for i, n in enumerate(FUSED[suffix]) if i not in parts]
        if missing:
            raise ConvertError(f"{missing[0]}: missing (the other projections of {prefix.rstrip('.')} are there)")
        if fused in out:
            raise ConvertError(f"{fused}: given both fused and as {', '.join(prefix + n for n in FUSED[suffix])}")
        out[fused] = torch.cat([parts[i] for i in range(len(FUSED[suffix]))], dim=0)
    return out


def fused_view(shapes: Mapping[str, tuple[int, ...]], read: Callable[[str], torch.Tensor]
               ) -> tuple[dict[str, tuple[int, ...]], Callable[[str], torch.Tensor]]:
    """A lazy reader (shape of each tensor by name, read(name)) seen with the split projections
    fused: the fused names' shapes, and a read that concatenates the parts when asked. A source
    already in the fused layout comes back as it is."""
    view: dict[str, tuple[int, ...]] = {}
    parts_of: dict[str, list[str | None]] = {}
    for name, shape in shapes.items():
        split = _split_name(name)
        if split is None:
            view[name] = tuple(shape)
            continue
        fused, suffix, i = split
        parts_of.setdefault(fused, [None] * len(FUSED[suffix]))[i] = name
    for fused, names in parts_of.items():
        if None in names:
            present = next(n for n in names if n is not None)
            raise ConvertError(f"{present}: its fused group {fused} lacks a part (needs {len(names)})")
        rows = sum(shapes[n][0] for n in names)  # type: ignore[index]
        view[fused] = (rows, *shapes[names[0]][1:])  # type: ignore[index]
    if not parts_of:
        return view, read

    def read_fused(name: str) -> torch.Tensor:
        names = parts_of.get(name)
        return read(name) if names is None else torch.cat([read(n) for n in names], dim=0)  # type: ignore[arg-type]

    return view, read_fused


def expected_shapes(args: ModelArgs, split: bool = False) -> dict[str, tuple[int, ...]]:
    """Our parameter names and shapes for `args` (from a model built on the meta device: no
    memory, no initialisation cost worth naming); with `split`, the fused projections as the
    reference's separate ones."""
    from aunet.model.hierarchical import HierarchicalTransformer

    with torch.device("meta"):
        model = HierarchicalTransformer(args)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not split:
        return shapes
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        suffix = _fused_suffix(name)
        if suffix is None:
            out[name] = shape
            continue
        prefix = name[: len(name) - len(suffix)]
        module = model.get_submodule(prefix + suffix.split(".")[0])
        rows = module.split if suffix.startswith("attention") else (shape[0] // 2,) * 2
        for part, n in zip(FUSED[suffix], rows):
            out[prefix + part] = (n, *shape[1:])
    return out


def from_lingua(state_dict: Mapping[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """The reference's (lingua apps/aunet) named tensors -> ours, for the model `args` describes.

    Names are the reference model's own (no ``model.`` prefix of its checkpoints); wrapper
    segments (``_orig_mod``, ``_checkpoint_wrapped_module``, ``_fsdp_wrapped_module``) are
    ignored and its derived buffers dropped. Tensors are not copied except where projections
    are fused (rows concatenated, so a gradient maps as its weight does). Raises `ConvertError`
    naming the first unknown, missing or misshapen key.
    """
    clean: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        ours = ".".join(part for part in name.split(".") if part not in _WRAPPERS)
        if _DERIVED_BUFFERS.match(ours):
            continue
        if ours in clean:
            raise ConvertError(f"{name}: given twice (also as {ours})")
        clean[ours] = tensor
    expected = expected_shapes(args, split=True)
    for name, tensor in clean.items():
        if name not in expected:
            hint = " (a fused name: the reference has separate projections)" if _fused_suffix(name) else ""
            raise ConvertError(f"{name}: not a parameter of the reference AU-Net for this config{hint} "
                               f"(pooling_type {args.pooling_type}, dimensions {args.dimensions}, "
                               f"layers {args.layers}, lambda_level {args.lambda_level})")
        if tuple(tensor.shape) != expected[name]:
            raise ConvertError(f"{name}: shape {tuple(tensor.shape)}, the config needs {expected[name]}")
    missing = [k for k in expected if k not in clean]
    if missing:
        raise ConvertError(f"{missing[0]}: missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return fuse_split_projections(clean)


def register_transformers_conversion() -> None:
    """Let transformers' `from_pretrained` read transformers directories written before the
    fusion: registers, for `AUNetForCausalLM`, a concatenation of each split group into its fused
    parameter (transformers 5's weight conversions). Directories with fused tensors do not match
    its patterns and load as they are. transformers reverses registered conversions in
    `save_pretrained` (its `save_original_format`), so a model saved from transformers has split
    projections again, which every aunet loader fuses."""
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import Concatenate, WeightConverter

    converters = [WeightConverter(source_patterns=[re.escape(p) for p in parts], target_patterns=re.escape(fused),
                                  operations=[Concatenate(dim=0)]) for fused, parts in FUSED.items()]
    register_checkpoint_conversion_mapping("AUNetForCausalLM", converters, overwrite=True)
