"""Part `train`: a ~100M AU-Net-3 under the DeepSpeed launcher, resumed, then `aunet export`,
`aunet eval` and `aunet generate` on its checkpoint. Everything runs in subprocesses, before
this process touches the GPU (a GPU in exclusive-process mode admits one process at a time).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from gpu_parts.plan import REPO, Context, Plan
from gpu_parts.running import Budget, Ran, check, free_port, optional_phase, require_success, run_logged

# What the part keeps for its own bookkeeping after a compiled run that ran out of time.
CLEANUP_S = 5


def train_config_raw(plan: Plan, data_root: Path, dump: Path) -> dict:
    """The training config: the base YAML with the plan's model, batch, a short warmup,
    frequent logging, checkpoints and validation, and this run's data."""
    import yaml

    raw = yaml.safe_load((REPO / plan.train_config).read_text())
    for unused in ("profiling", "probe_freq", "async_eval_gpus"):
        raw.pop(unused, None)
    raw.setdefault("eval", {}).pop("harness", None)
    raw["name"] = "gpu_check_train"
    raw["dump_dir"] = str(dump)
    raw["model"].update(copy.deepcopy(plan.train_model))
    raw["data"].update(root_dir=str(data_root), sources={"stdlib": 1.0}, batch_size=plan.train_batch,
                       seq_len=plan.train_seq_len, prefetch_size=16)
    if plan.smoke:
        # tiny_aunet3's caps are for 512-byte windows; these sizes keep the same share.
        raw["model"]["max_seqlens"] = [-1, 96, 80]
    raw["optim"].update(warmup=max(2, plan.steps // 5))
    raw["checkpoint"] = {"dump": {"every": plan.steps, "keep": 2}, "eval": {"every": plan.steps, "keep": 1}}
    raw["eval"]["validation"] = {"sources": {"heldout": 1.0}, "max_steps": 4 if not plan.smoke else 2}
    raw["logging"] = {"freq": plan.log_freq}
    return raw


def train_model_args(plan: Plan):
    from aunet.config import config_from_dict

    cfg, _ = config_from_dict(train_config_raw(plan, Path("data"), Path("run")))
    return cfg


def build_training_data(plan: Plan, work: Path) -> dict:
    from aunet.demo import build_corpus
    from aunet.segment import segment_corpus

    cfg = train_model_args(plan)
    train_jsonl, heldout_jsonl = build_corpus(work / "corpus", int(plan.corpus_mb * 1e6))
    out = {}
    for name, src in (("stdlib", train_jsonl), ("heldout", heldout_jsonl)):
        m = segment_corpus([str(src)], work / "data" / name, cfg.data.shard_strategy, workers=1)
        out[name] = {"documents": m.documents_written, "bytes": sum(s.text_bytes for s in m.shards)}
    return out


def metrics_records(dump: Path) -> list[dict]:
    path = dump / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def subprocess_env(plan: Plan) -> dict:
    """The parent's environment (DS_ACCELERATOR already chosen), this interpreter's scripts on
    PATH (ninja), one OpenMP thread per CPU rank in the smoke run."""
    from aunet.training.accelerator import ensure_ds_accelerator

    ensure_ds_accelerator()
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if plan.smoke:
        env["OMP_NUM_THREADS"] = "1"
    return env


def launch_training(ctx: "Context", config: Path, steps: int, log: Path, timeout: float, compile: bool = False) -> Ran:
    """`deepspeed --num_gpus 1 aunet/train.py --config CONFIG key=value ...` (the launcher run
    as a module, so that a scripts folder missing from PATH does not matter)."""
    import aunet

    plan = ctx.plan
    train_py = Path(aunet.__file__).parent / "train.py"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", str(free_port()),
           str(train_py), "--config", str(config), f"steps={steps}", "distributed.fsdp_type=full_shard",
           "distributed.model_dtype=bf16", f"distributed.compile={'true' if compile else 'false'}",
           f"distributed.compile_backend={plan.compile_backend}"]
    return run_logged(cmd, log, timeout, ctx.env, sample_gpu=not plan.smoke)


def compiled_run(ctx: "Context", rec: dict, work: Path, logs: Path, budget: Budget) -> None:
    """A fresh run of `compiled_steps` steps compiled block by block, in its own dump folder;
    `rec["compiled"]` gets its figures, or why there are none (the eager ones stand)."""
    import yaml

    plan = ctx.plan
    dump, config = work / "run_compiled", work / "config_compiled.yaml"
    config.write_text(yaml.safe_dump(train_config_raw(plan, work / "data", dump), sort_keys=False))

    def run() -> dict:
        ran = launch_training(ctx, config, plan.compiled_steps, logs / "compiled.log", budget.left() - CLEANUP_S, compile=True)
        require_success(ran, "compiled training", logs / "compiled.log")
        return {"seconds": round(ran.seconds, 1), "peak_gpu_gb": ran.peak_gpu_gb, "backend": plan.compile_backend,
                **train_summary(metrics_records(dump))}

    result = optional_phase(rec, "compiled", budget.left() - CLEANUP_S, run)
    if result is not None:
        rec["compiled"] = result


def train_summary(records: list[dict]) -> dict:
    train = [r for r in records if "bpb" in r]
    val = [r for r in records if "val_bpb" in r]
    last = train[-1] if train else {}
    return {"first_bpb": train[0]["bpb"] if train else None, "last_bpb": last.get("bpb"),
            "val_bpb": val[-1]["val_bpb"] if val else None, "bytes_per_s": last.get("bytes_per_s"),
            "mfu": last.get("mfu"), "logged_steps": [r["step"] for r in train]}


def part_train(ctx: "Context", rec: dict, budget: Budget) -> None:
    from aunet.model.flops import param_count
    from aunet.training.checkpoint import latest_complete

    plan, work = ctx.plan, ctx.workdir / "train"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: an old checkpoint would fake the resume
    dump, logs = work / "run", work / "logs"
    cfg = train_model_args(plan)
    rec.update(params=param_count(cfg.model), dimensions=cfg.model.dimensions, layers=cfg.model.layers,
               seq_len=plan.train_seq_len, batch=plan.train_batch, steps=plan.steps, resume_steps=plan.resume_steps,
               compile=plan.compile_training, compiled_steps=plan.compiled_steps)
    t = time.monotonic()
    rec["data"] = build_training_data(plan, work)
    rec["segment_s"] = round(time.monotonic() - t, 1)
    config = work / "config.yaml"
    import yaml

    config.write_text(yaml.safe_dump(train_config_raw(plan, work / "data", dump), sort_keys=False))

    first = launch_training(ctx, config, plan.steps, logs / "train.log", budget.left())
    require_success(first, "training", logs / "train.log")
    records = metrics_records(dump)
    rec["run1"] = {"seconds": round(first.seconds, 1), "peak_gpu_gb": first.peak_gpu_gb, **train_summary(records)}
    ckpts = dump / "checkpoints"
    check(latest_complete(ckpts) == plan.steps, f"no complete checkpoint at step {plan.steps} in {ckpts}")

    second = launch_training(ctx, config, plan.resume_steps, logs / "resume.log", budget.left())
    require_success(second, "resumed training", logs / "resume.log")
    new = metrics_records(dump)[len(records):]
    rec["run2"] = {"seconds": round(second.seconds, 1), "peak_gpu_gb": second.peak_gpu_gb, **train_summary(new)}
    steps = rec["run2"]["logged_steps"]
    # A run that started over would log steps from the beginning again; a resumed one goes on.
    rec["first_resumed_step"] = min(steps) if steps else None
    rec["resumed"] = bool(steps) and min(steps) > plan.steps and max(steps) == plan.resume_steps
    rec["resume_message"] = "resumed from" in second.output
    check(rec["resumed"], f"the rerun with steps={plan.resume_steps} logged steps {steps}, not {plan.steps + 1}..{plan.resume_steps}")
    check(latest_complete(ckpts) == plan.resume_steps, f"no complete checkpoint at step {plan.resume_steps}")

    export = work / "export"
    ran = run_logged([sys.executable, "-m", "aunet.cli", "export", "--checkpoints", str(ckpts), "--out", str(export)],
                     logs / "export.log", budget.left(), ctx.env)
    require_success(ran, "aunet export", logs / "export.log")
    rec["export_s"] = round(ran.seconds, 1)
    check((export / "model.safetensors").is_file(), "aunet export wrote no model.safetensors")

    eval_json = work / "eval.json"
    ran = run_logged([sys.executable, "-m", "aunet.cli", "eval", "--model", str(export), "--data", str(work / "data" / "heldout"),
                      "--max-batches", str(plan.eval_batches), "--batch-size", "2", "--out", str(eval_json)],
                     logs / "eval.log", budget.left(), ctx.env)
    require_success(ran, "aunet eval", logs / "eval.log")
    overall = json.loads(eval_json.read_text())["overall"]
    rec["eval"] = {"bpb": overall["bpb"], "bytes": overall["bytes"], "seconds": round(ran.seconds, 1)}
    check(math.isfinite(overall["bpb"]) and overall["bytes"] > 0, f"aunet eval gave {overall}")

    prompt = "def "
    ran = run_logged([sys.executable, "-m", "aunet.cli", "generate", "--model", str(export), "--prompt", prompt,
                      "--max-bytes", "64", "--temperature", "0"], logs / "generate.log", budget.left(), ctx.env)
    require_success(ran, "aunet generate", logs / "generate.log")
    sample = ran.output.rstrip("\n").splitlines()[-1] if ran.output.strip() else ""
    rec["generate"] = {"sample": ran.output[-400:], "seconds": round(ran.seconds, 1)}
    check(prompt in ran.output and len(ran.output) > len(prompt), f"aunet generate printed {sample!r}")
    r1, r2 = rec["run1"], rec["run2"]
    rec["summary"] = (f"{rec['params'] / 1e6:.1f}M params; bpb {r1['first_bpb']:.2f} -> {r2['last_bpb']:.2f}, "
                      f"resumed at step {rec['first_resumed_step']}; held-out bpb {rec['eval']['bpb']:.2f}; "
                      f"eager {(r2['bytes_per_s'] or 0) / 1e3:.0f}k bytes/s")
    if plan.compile_training:
        compiled_run(ctx, rec, work, logs, budget)
        c = rec["compiled"]
        rec["summary"] += (f", compiled {(c['bytes_per_s'] or 0) / 1e3:.0f}k bytes/s" if isinstance(c, dict)
                           else ", compiled: ran out of time")
