"""transformers `generate()` on an `aunet export --format hf` directory, beside `aunet generate`'s
cached generator on the same weights, in the same run (CPU, greedy).

Both run aunet's per-stage key/value cache; the difference is the transformers loop around it
(logits processors, stopping criteria, one `forward` call per byte) and the HF model's
bookkeeping. Also reported: the largest logit difference between the two on the prompt (fp32).

Model: configs/tiny_aunet3.yaml with random weights and no max_seqlens limit, strategy word1
1@1 + word2 2@1 (as benches/bench_generate.py).

    .venv/bin/python benches/bench_hf.py [--bytes 256] [--batches 1 8] [--threads 1] [--repeats 3] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import save  # noqa: E402

PROMPTS = [b"The cat sat on the mat and", b"def pool(levels, stage):\n    ", b"Once upon a time, in a land far",
           b"It was the best of times,"]


def build(root: Path) -> tuple[Path, Path]:
    """An `aunet export` with random weights and its transformers directory."""
    from safetensors.torch import save_file

    from aunet.config import load_config, to_dict
    from aunet.hf.export import export_hf_from_export
    from aunet.model import HierarchicalTransformer

    cfg, _ = load_config(HERE.parent / "configs" / "tiny_aunet3.yaml")
    cfg.model.max_seqlens = [-1] * len(cfg.model.dimensions)
    torch.manual_seed(0)
    model = HierarchicalTransformer(cfg.model)
    export = root / "export"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(export / "model.safetensors"))
    (export / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return export, export_hf_from_export(export, root / "hf")


def best_time(fn, repeats: int) -> tuple[float, object]:
    """The fastest of `repeats` runs (the least disturbed by other work on the machine)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def rates(export: Path, hf: Path, batch: int, n: int, repeats: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aunet.inference.export import load_model
    from aunet.inference.generate import Generator

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    model, cfg = load_model(export)
    gen = Generator(model, cfg.data.regex.strategy)
    gen.generate(prompts, 8, temperature=0)  # warm-up (first-call allocations), for both sides
    t_aunet, ours = best_time(lambda: gen.generate(prompts, n, temperature=0), repeats)
    hf_model = AutoModelForCausalLM.from_pretrained(hf, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(hf, trust_remote_code=True)
    enc = tok([p.decode() for p in prompts], return_tensors="pt", padding=True)
    hf_model.generate(**enc, max_new_tokens=8, do_sample=False)
    t_hf, out = best_time(lambda: hf_model.generate(**enc, max_new_tokens=n, do_sample=False, suppress_tokens=[256, 257]),
                          repeats)
    theirs = [bytes(r[enc["input_ids"].shape[1]:].tolist()) for r in out]
    one = tok(prompts[0].decode(), return_tensors="pt")
    levels = torch.from_numpy(gen.segmenter.levels(prompts[0], bos=True).astype("int64"))[None]
    with torch.no_grad():
        diff = (hf_model(**one).logits - model(one["input_ids"], levels)[0]).abs().max().item()
    return {"batch": batch, "bytes_each": n, "aunet_bytes_per_s": batch * n / t_aunet, "hf_bytes_per_s": batch * n / t_hf,
            "hf_over_aunet": t_aunet / t_hf, "same_bytes": theirs == ours, "max_logit_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=256, help="bytes generated per sequence")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the fastest is reported")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_hf.json")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 32 bytes, batches 1 and 2")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n, batches, repeats = (32, [1, 2], 1) if a.quick else (a.bytes, a.batches, a.repeats)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        export, hf = build(Path(tmp))
        rows = [rates(export, hf, b, n, repeats) for b in batches]
    print(f"{'batch':>6} {'aunet B/s':>10} {'HF B/s':>9} {'HF/aunet':>9} {'same bytes':>11} {'max |dlogit|':>13}")
    for r in rows:
        print(f"{r['batch']:>6} {r['aunet_bytes_per_s']:>10.1f} {r['hf_bytes_per_s']:>9.1f} {r['hf_over_aunet']:>8.2f}x "
              f"{str(r['same_bytes']):>11} {r['max_logit_diff']:>13.2e}")
    import transformers

    save(a.out, {"rows": rows, "model": "configs/tiny_aunet3.yaml, max_seqlens -1, random weights", "greedy": True,
                 "threads": a.threads, "repeats": repeats, "torch": torch.__version__, "transformers": transformers.__version__,
                 "machine": platform.platform()})


if __name__ == "__main__":
    main()
