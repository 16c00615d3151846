"""GPU acceptance run: one command on a CUDA machine (under 8 minutes on one H100/H200) that
prints a table and writes JSON.

Parts, in order; each is one function with a time budget, and a part that fails (an error, a
check that does not hold, its budget spent) is recorded with its error while the run goes on. A
compile that runs out of a part's time leaves the part its eager figures. Under the device tool,
`--out $OUT/gpu_check.json` brings the results back.

  setup       aunet and DeepSpeed importable; installed offline from the wheelhouse
              (`make gpu-wheelhouse`) when they are not; the installed aunet is the checkout's
  environment GPU, versions, and the tools DeepSpeed and Inductor build with at run time
  train       a ~100M-parameter AU-Net-3 (configs/aunet3_1b.yaml, narrower and shallower) on this
              machine's Python standard library sources, segmented here: 30 steps under the
              DeepSpeed launcher (ZeRO-3, bf16, eager), then the same command with steps=40
              resumes to 40; `aunet export`, `aunet eval`, `aunet generate`; then a fresh run
              compiled block by block (`distributed.compile`), whose figures are added when it
              finishes in the part's time (the eager ones stand otherwise)
  generation  cached generation logits against the full forward pass in bf16
  throughput_aunet2 / throughput_bytes / throughput_bpe
              bytes/s, MFU and peak memory of a bf16 forward + backward + AdamW step at seq_len
              8192 with the largest batch that fits: the published AU-Net-2 "1B" config, and a
              flat byte transformer and a BPE-like flat transformer of equal FLOPs per byte

The training part runs first, in subprocesses, before this process touches the GPU (a GPU in
exclusive-process mode admits one process at a time). `--cpu-smoke` runs every part at tiny
sizes on the CPU (DeepSpeed on its CPU accelerator) to exercise the plumbing
(tests/test_gpu_check.py); its numbers measure nothing.

    python benches/gpu_check.py [--wheelhouse gpu-wheelhouse] [--out FILE] [--workdir DIR] [--parts a,b]
    python benches/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_parts.generation import part_generation  # noqa: E402
from gpu_parts.install import part_environment, part_setup  # noqa: E402
from gpu_parts.plan import GPU, PAPER_BYTES_PER_S, REPO, SMOKE, Context  # noqa: E402
from gpu_parts.running import run_part  # noqa: E402
from gpu_parts.throughput import part_throughput_aunet2, part_throughput_bpe, part_throughput_bytes, peak_flops  # noqa: E402
from gpu_parts.train import part_train, subprocess_env  # noqa: E402
from report import save  # noqa: E402


PARTS = {
    "setup": part_setup,
    "environment": part_environment,
    "train": part_train,
    "generation": part_generation,
    "throughput_aunet2": part_throughput_aunet2,
    "throughput_bytes": part_throughput_bytes,
    "throughput_bpe": part_throughput_bpe,
}
PART_NAMES = tuple(PARTS)


def prepare(ctx: Context) -> None:
    """What every part after setup needs: the device and the subprocesses' environment."""
    import torch

    ctx.device = torch.device("cpu" if ctx.plan.smoke else "cuda")
    ctx.env = subprocess_env(ctx.plan)


def run_parts(ctx: Context, names, parts: dict = PARTS, budgets: dict | None = None) -> dict:
    """Each part in turn; the parts after setup first need `prepare` (aunet importable)."""
    budgets = budgets or ctx.plan.budgets
    results = {}
    for name in names:
        if name != "setup" and ctx.device is None:
            try:
                prepare(ctx)
            except Exception as e:  # noqa: BLE001 - reported by every later part
                results[name] = {"ok": False, "error": f"cannot start: {type(e).__name__}: {e}", "seconds": 0.0}
                continue
        results[name] = run_part(name, parts[name], ctx, budgets.get(name, 60))
    return results


def ratios(parts: dict) -> dict:
    """AU-Net-2's bytes/s over each baseline's, measured in the same run."""
    base = parts.get("throughput_aunet2", {}).get("bytes_per_s")
    out = {}
    for name in ("throughput_bytes", "throughput_bpe"):
        other = parts.get(name, {}).get("bytes_per_s")
        if base and other:
            out[f"aunet2_over_{name.split('_')[1]}"] = round(base / other, 3)
    return out


def print_tables(result: dict) -> None:
    print()
    head = f"{'part':<19}{'status':<8}{'seconds':>8}  summary"
    print(head)
    print("-" * 100)
    for name, rec in result["parts"].items():
        status = "ok" if rec["ok"] else "FAILED"
        text = rec.get("summary", "") if rec["ok"] else (rec.get("error") or "").splitlines()[0][:150]
        print(f"{name:<19}{status:<8}{rec['seconds']:>8.1f}  {text}")
    rows = [rec for name, rec in result["parts"].items() if name.startswith("throughput") and "bytes_per_s" in rec]
    if rows:
        print()
        head = (f"{'model':<18}{'params':>9}{'shape':>14}{'GFLOP/B':>9}{'batch':>6}{'KB/s':>9}{'MFU':>7}"
                f"{'x paper':>8}{'peak GB':>8}")
        print(head)
        print("-" * len(head))
        for r in rows:
            shape = "x".join(map(str, r["layers"])) + "/" + "x".join(map(str, r["dimensions"]))
            print(f"{r['model']:<18}{r['params'] / 1e6:>8.0f}M{shape:>14}{r['flops_per_byte'] / 1e9:>9.2f}{r['batch']:>6}"
                  f"{r['bytes_per_s'] / 1e3:>9.1f}{r['mfu']:>7.1%}{r['x_paper']:>8.2f}{r['peak_memory_gb'] or 0:>8.1f}")
        for key, value in result["ratios"].items():
            print(f"{key}: {value:.2f}x")


def default_out(plan, workdir: Path) -> Path:
    """Under the device tool ($OUT set: only what is written there comes back) the results go
    there; otherwise to benches/results (the smoke run: its work folder)."""
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return workdir / "gpu_check.json" if plan.smoke else HERE / "results" / "gpu_check.json"


def keep_logs(workdir: Path, dest: Path) -> None:
    """Next to the results under $OUT, the subprocesses' logs (their last 200 KB each), which
    say why a part failed on a machine that is gone once the run ends."""
    if not os.environ.get("OUT") or dest != Path(os.environ["OUT"]):
        return
    for log in sorted(workdir.glob("**/logs/*.log")):
        target = dest / "logs" / log.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(log.read_bytes()[-200_000:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: the plumbing only")
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "gpu-wheelhouse")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "gpu_check")
    parser.add_argument("--out", type=Path, help="JSON (default: benches/results/gpu_check.json; the smoke run: WORKDIR/gpu_check.json)")
    parser.add_argument("--parts", help=f"comma-separated subset of {','.join(PART_NAMES)} (setup always runs)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time budget")
    args = parser.parse_args(argv)
    plan = SMOKE if args.cpu_smoke else GPU
    names = PART_NAMES if not args.parts else ("setup", *[n for n in args.parts.split(",") if n in PARTS and n != "setup"])
    unknown = set(args.parts.split(",")) - set(PARTS) if args.parts else set()
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    import torch

    if not plan.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; run it on a GPU machine, or --cpu-smoke here", file=sys.stderr)
        return 2
    out = args.out or default_out(plan, args.workdir)
    # DeepSpeed picks its accelerator when first imported, in every child process too.
    if plan.smoke:
        os.environ["DS_ACCELERATOR"] = "cpu"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cuda")
    args.workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(plan=plan, workdir=args.workdir.resolve(), wheelhouse=args.wheelhouse.resolve())
    started = time.monotonic()
    parts = run_parts(ctx, names, budgets={k: v * args.budget_scale for k, v in plan.budgets.items()})
    result = {
        "mode": "cpu-smoke" if plan.smoke else "gpu", "command": " ".join(["benches/gpu_check.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(), "torch": torch.__version__,
        "machine": platform.machine(), "paper_bytes_per_s": PAPER_BYTES_PER_S, "peak_flops": peak_flops(),
        "seconds": round(time.monotonic() - started, 1), "parts": parts, "ratios": ratios(parts),
    }
    print_tables(result)
    print(f"\n{sum(p['ok'] for p in parts.values())}/{len(parts)} parts ok in {result['seconds']:.0f} s")
    save(out, result)
    keep_logs(args.workdir, out.parent)
    return 0 if all(p["ok"] for p in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
