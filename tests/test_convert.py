"""The reference's parameter layout (separate wq/wk/wv, w1/w3) -> our fused model: weights and
gradients, and our own files saved before the fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from aunet.config import BlockArgs, config_from_dict, to_dict
from aunet.model import HierarchicalTransformer
from aunet.model.convert import ConvertError, from_lingua, fuse_split_projections, fused_view
from aunet.model.layers import apply_rope, causal_attention, rope_tables
from lingua_layout import to_lingua
from model_helpers import text_batch, tiny_args

CASES = [
    (1, "simple_indexed_matmul", {}),
    (2, "simple_non_param_indexed_matmul", {"lambda_level": 0.5}),
    (2, "simple_repeat", {"block": BlockArgs(multiple_of=16, rope_theta=10000.0, n_kv_heads=1)}),  # GQA: K/V rows differ
    (1, "simple_non_param", {}),
]


def logits_of(model, levels):
    tokens, lev = text_batch(levels, 48)
    with torch.no_grad():
        return model.eval()(tokens, lev)[0]


@pytest.mark.parametrize("levels,pooling,extra", CASES)
def test_reference_weights_load_with_equal_logits(levels, pooling, extra):
    args = tiny_args(levels, pooling, **extra)
    torch.manual_seed(0)
    source = HierarchicalTransformer(args)
    reference = to_lingua(source.state_dict(), args)
    assert "trunk.layers.0.attention.wq.weight" in reference and not any("wqkv" in k for k in reference)
    torch.manual_seed(1)
    target = HierarchicalTransformer(args)
    target.load_state_dict(from_lingua(reference, args), strict=True)
    # The same weights through the same operations: equal to the last bit (tolerance 0).
    torch.testing.assert_close(logits_of(target, levels), logits_of(source, levels), rtol=0, atol=0)


def reference_block(x, w, n_heads, n_kv_heads, head_dim, window, eps):
    """One block as the reference computes it, from its separate projections (lingua's
    TransformerBlock: h = x + wo(attn(wq x, wk x, wv x)); out = h + w2(silu(w1 h') * w3 h'))."""
    B, T, _ = x.shape
    cos, sin = rope_tables(T, head_dim, 10000.0, x.device)
    h = F.rms_norm(x, (x.shape[-1],), w["attention_norm.weight"], eps)
    q = apply_rope(F.linear(h, w["attention.wq.weight"]).view(B, T, n_heads, head_dim), cos, sin).transpose(1, 2)
    k = apply_rope(F.linear(h, w["attention.wk.weight"]).view(B, T, n_kv_heads, head_dim), cos, sin).transpose(1, 2)
    v = F.linear(h, w["attention.wv.weight"]).view(B, T, n_kv_heads, head_dim).transpose(1, 2)
    x = x + F.linear(causal_attention(q, k, v, window).transpose(1, 2).reshape(B, T, -1), w["attention.wo.weight"])
    h = F.rms_norm(x, (x.shape[-1],), w["ffn_norm.weight"], eps)
    ffn = F.linear(F.silu(F.linear(h, w["feed_forward.w1.weight"])) * F.linear(h, w["feed_forward.w3.weight"]),
                   w["feed_forward.w2.weight"])
    return x + ffn


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_a_reference_block_and_its_gradients_map_onto_the_fused_block(n_kv_heads):
    """The semantic check: the reference's computation on its own tensors equals our fused block
    on the converted tensors, and the reference's gradients, converted, are our gradients."""
    args = tiny_args(0, dimensions=[32], head_dims=[8], layers=[1], sliding_windows=[8], max_seqlens=[-1],
                     block=BlockArgs(multiple_of=16, rope_theta=10000.0, n_kv_heads=n_kv_heads))
    torch.manual_seed(0)
    # In float64, so that the one remaining difference (one GEMM for Q/K/V instead of three,
    # blocked differently) stays far below the tolerances.
    reference = {k: v.double().requires_grad_(True) for k, v in
                 to_lingua(HierarchicalTransformer(args).state_dict(), args).items()}
    model = HierarchicalTransformer(args).double()
    model.load_state_dict(from_lingua({k: v.detach() for k, v in reference.items()}, args))
    block = model.trunk.layers[0]
    x = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    prefix = "trunk.layers.0."
    w = {k[len(prefix):]: v for k, v in reference.items() if k.startswith(prefix)}
    want = reference_block(x, w, 4, args.n_kv_heads(0), 8, 8, args.block.norm_eps)
    rope = rope_tables(20, 8, 10000.0, x.device)
    got = block(x, rope, 8)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    (want * g).sum().backward()
    (got * g).sum().backward()
    grads = from_lingua({k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in reference.items()}, args)
    for name, p in block.named_parameters():
        torch.testing.assert_close(p.grad, grads[prefix + name], rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_wrapper_segments_and_derived_buffers_are_accepted():
    args = tiny_args(1, "simple_non_param_indexed_matmul")
    torch.manual_seed(0)
    reference = to_lingua(HierarchicalTransformer(args).state_dict(), args)
    assert "transitions.0.features_weight" in reference
    wrapped = {("_orig_mod." + k if k.startswith("trunk") else k.replace("layers.0.", "layers.0._checkpoint_wrapped_module.")): v
               for k, v in reference.items()}
    assert from_lingua(wrapped, args).keys() == from_lingua(reference, args).keys()


def test_unknown_missing_and_misshapen_keys_are_refused_by_name():
    args = tiny_args(1)
    torch.manual_seed(0)
    reference = to_lingua(HierarchicalTransformer(args).state_dict(), args)
    with pytest.raises(ConvertError, match=r"^encoders\.0\.layers\.0\.attention\.wk\.weight: missing"):
        from_lingua({k: v for k, v in reference.items() if k != "encoders.0.layers.0.attention.wk.weight"}, args)
    with pytest.raises(ConvertError, match=r"^trunk\.extra\.weight: not a parameter"):
        from_lingua({**reference, "trunk.extra.weight": torch.zeros(1)}, args)
    bad = dict(reference)
    bad["trunk.layers.0.feed_forward.w3.weight"] = bad["trunk.layers.0.feed_forward.w3.weight"][:-1]
    with pytest.raises(ConvertError, match=r"^trunk\.layers\.0\.feed_forward\.w3\.weight: shape"):
        from_lingua(bad, args)
    ours = HierarchicalTransformer(args).state_dict()
    with pytest.raises(ConvertError, match=r"wqkv\.weight: not a parameter .*fused name"):
        from_lingua(ours, args)
    # Another config than the weights': the first misfit is named.
    with pytest.raises(ConvertError, match=r"shape"):
        from_lingua(reference, tiny_args(1, dimensions=[16, 48]))


def test_split_projections_of_our_old_files_are_fused_lazily_and_eagerly():
    args = tiny_args(1)
    torch.manual_seed(0)
    ours = HierarchicalTransformer(args).state_dict()
    old = to_lingua(ours, args, buffers=False)
    eager = fuse_split_projections(old)
    assert eager.keys() == ours.keys() and all(torch.equal(eager[k], ours[k]) for k in ours)
    reads = []

    def read(name):
        reads.append(name)
        return old[name]

    shapes, lazy = fused_view({k: tuple(v.shape) for k, v in old.items()}, read)
    assert shapes == {k: tuple(v.shape) for k, v in ours.items()}
    assert reads == []  # nothing read until asked
    assert torch.equal(lazy("trunk.layers.0.attention.wqkv.weight"), ours["trunk.layers.0.attention.wqkv.weight"])
    assert reads == [f"trunk.layers.0.attention.{p}.weight" for p in ("wq", "wk", "wv")]
    with pytest.raises(ConvertError, match="w3.weight: missing"):
        fuse_split_projections({k: v for k, v in old.items() if k != "trunk.layers.0.feed_forward.w3.weight"})
    assert fuse_split_projections(ours).keys() == ours.keys()  # already fused: unchanged


STRATEGIES = {1: {"word1": "1@1"}, 2: {"word1": "1@1", "word2": "2@1"}}


def write_old_export(directory, args, seed=0):
    """An `aunet export` as written before the fusion: the same config, split projections."""
    torch.manual_seed(seed)
    model = HierarchicalTransformer(args)
    cfg, _ = config_from_dict({"model": to_dict(args), "data": {"regex": {"strategy": STRATEGIES[args.n_levels]}}})
    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in to_lingua(model.state_dict(), args, buffers=False).items()},
              str(directory / "model.safetensors"), metadata={"step": "7", "format": "aunet"})
    (directory / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return model, cfg


def test_old_exports_load_start_runs_and_convert_to_hf(tmp_path):
    from safetensors import safe_open

    from aunet.hf.export import export_hf_from_export
    from aunet.inference.export import load_model
    from aunet.training.init_weights import load_into, resolve

    args = tiny_args(1)
    original, cfg = write_old_export(tmp_path / "old", args)
    loaded, _ = load_model(tmp_path / "old")
    torch.testing.assert_close(logits_of(loaded, 1), logits_of(original, 1), rtol=0, atol=0)  # same weights, same ops
    torch.manual_seed(5)
    fresh = HierarchicalTransformer(args)
    assert load_into(fresh, resolve(tmp_path / "old", cfg), rank=0) == len(list(fresh.parameters()))
    torch.testing.assert_close(logits_of(fresh, 1), logits_of(original, 1), rtol=0, atol=0)
    export_hf_from_export(tmp_path / "old", tmp_path / "hf")
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), framework="pt") as f:
        assert set(f.keys()) == set(original.state_dict())


def test_resume_refuses_a_checkpoint_saved_with_split_projections(tmp_path):
    from aunet.training.checkpoint import mark_complete, tag_for
    from aunet.training.resume import ResumeError, check_same_run

    cfg, _ = config_from_dict({})
    (tmp_path / tag_for(5)).mkdir()
    mark_complete(tmp_path, 5, {"world_size": 1, "config": to_dict(cfg)})
    with pytest.raises(ResumeError, match="before the Q/K/V and W1/W3 projections were fused.*init_ckpt_path"):
        check_same_run(tmp_path / tag_for(5), cfg, 1)


@pytest.mark.slow  # 5 s: loads the directory with transformers in a subprocess
def test_transformers_fuses_an_hf_directory_written_before_the_fusion(tmp_path):
    """An HF directory as exported before: split tensors, and the code files of its time (here
    today's, which import the same aunet); transformers' from_pretrained fuses them."""
    pytest.importorskip("transformers")
    import subprocess
    import sys

    from safetensors import safe_open

    from aunet.hf.export import export_hf_from_export

    args = tiny_args(2, block=BlockArgs(multiple_of=16, rope_theta=10000.0, n_kv_heads=1))
    original, _ = write_old_export(tmp_path / "old", args)
    hf = export_hf_from_export(tmp_path / "old", tmp_path / "hf")
    with safe_open(str(hf / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    # Put the weights back in the old layout, as such a directory has them.
    save_file({k: v.contiguous() for k, v in to_lingua(original.state_dict(), args, buffers=False).items()},
              str(hf / "model.safetensors"), metadata=meta)
    torch.save(original.state_dict(), tmp_path / "want.pt")
    code = ("import torch\nfrom transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(hf)!r}, trust_remote_code=True)\n"
            f"want = torch.load({str(tmp_path / 'want.pt')!r}, weights_only=True)\n"
            "got = m.state_dict()\n"
            "assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())\n"
            "bad = [k for k in want if not torch.equal(got[k], want[k])]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
