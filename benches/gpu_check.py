"""GPU acceptance run: one command on a CUDA machine (under 8 minutes on one H100/H200) that
prints a table and writes JSON.

Parts, in order; each is one function with a time budget, and a part that fails (an error, a
check that does not hold, its budget spent) is recorded with its error while the run goes on:

  setup       aunet and DeepSpeed importable; installed offline from the wheelhouse
              (`make gpu-wheelhouse`) when they are not; the installed aunet is the checkout's
  environment GPU, versions, and the tools DeepSpeed and Inductor build with at run time
  train       a ~100M-parameter AU-Net-3 (configs/aunet3_1b.yaml, narrower and shallower) on this
              machine's Python standard library sources, segmented here: 50 steps under the
              DeepSpeed launcher (ZeRO-3, bf16, distributed.compile=true), then the same command
              with steps=60 resumes to 60; `aunet export`, `aunet eval`, `aunet generate`
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
import copy
import gc
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from report import save  # noqa: E402

# The paper's AU-Net-2 "1B" training speed per H100, and the dense bf16 peak that MFU divides by
# (H100 and H200 SXM alike; the trainer's PEAK_FLOPS["cuda"]).
PAPER_BYTES_PER_S = 225e3
PEAK_BF16_FLOPS = 989e12


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode (a GPU run, or the CPU smoke run)."""

    smoke: bool
    train_config: str
    train_model: dict
    """Overrides of the base config's `model` section (empty: the config's own model)."""
    train_batch: int
    train_seq_len: int
    steps: int
    resume_steps: int
    log_freq: int
    compile_training: bool
    corpus_mb: float
    eval_batches: int
    gen_prompt_bytes: int
    gen_pushed_bytes: int
    throughput_config: str
    throughput_seq_len: int | None
    """Bytes per sequence (None: the config's)."""
    batches: tuple[int, ...]
    """Batch sizes tried, ascending; the largest that runs two steps is timed."""
    warmup_steps: int
    timed_steps: int
    compile_throughput: bool
    flat_head: int
    flat_multiple_of: int
    flat_widths: tuple[int, ...]
    bpe_vocab: int
    bytes_per_token: float
    budgets: dict = field(default_factory=dict)
    """Seconds per part."""


GPU = Plan(
    smoke=False, train_config="configs/aunet3_1b.yaml",
    # 98.6M parameters (tests/test_gpu_check.py): the 1B config's layout and byte stage, with
    # stages 1 and 2 at 512 and 768 wide and 4 and 8 blocks deep.
    train_model={"dimensions": [256, 512, 768], "layers": [3, 4, 8], "head_dims": [64, 128, 128]},
    train_batch=8, train_seq_len=8192, steps=50, resume_steps=60, log_freq=10, compile_training=True,
    corpus_mb=8.0, eval_batches=2, gen_prompt_bytes=400, gen_pushed_bytes=800,
    throughput_config="configs/aunet2_1b.yaml", throughput_seq_len=None, batches=(8, 12, 16, 24, 32, 48), warmup_steps=2, timed_steps=5,
    compile_throughput=True, flat_head=128, flat_multiple_of=256, flat_widths=tuple(range(512, 4097, 128)),
    # A LLaMA-3-sized BPE vocabulary at ~4.5 bytes per token (English web text).
    bpe_vocab=128256, bytes_per_token=4.5,
    # 475 s in all, so that the run stays under 8 minutes whatever happens.
    budgets={"setup": 45, "environment": 10, "train": 220, "generation": 35,
             "throughput_aunet2": 55, "throughput_bytes": 55, "throughput_bpe": 55},
)

SMOKE = Plan(
    smoke=True, train_config="configs/tiny_aunet3.yaml", train_model={}, train_batch=4, train_seq_len=256,
    steps=4, resume_steps=6, log_freq=2, compile_training=False, corpus_mb=0.3, eval_batches=1,
    gen_prompt_bytes=60, gen_pushed_bytes=150, throughput_config="configs/tiny_aunet2.yaml", throughput_seq_len=128,
    batches=(1, 2),
    warmup_steps=1, timed_steps=2, compile_throughput=False, flat_head=16, flat_multiple_of=16,
    flat_widths=tuple(range(32, 257, 16)), bpe_vocab=1024, bytes_per_token=3.0,
    # Generous: a shared 2-core machine under load runs these several times slower.
    budgets={"setup": 60, "environment": 15, "train": 400, "generation": 60,
             "throughput_aunet2": 60, "throughput_bytes": 60, "throughput_bpe": 60},
)


# ---------------------------------------------------------------------------------------------
# Running parts: budgets, errors, subprocesses


class CheckFailed(Exception):
    """A measured result that does not meet its requirement."""


class PartTimeout(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def used(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return max(1.0, self.seconds - self.used())


@contextmanager
def deadline(seconds: float):
    """Raise PartTimeout in the main thread once `seconds` have passed (a hung compile or
    collective must not take the later parts' time)."""
    def fire(signum, frame):
        raise PartTimeout(f"over its {seconds:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(name: str, fn, ctx: "Context", seconds: float) -> dict:
    """Run one part under its budget. The record `fn` fills stays, whatever happens."""
    rec: dict = {"ok": False, "budget_s": seconds}
    budget = Budget(seconds)
    print(f"\n=== {name} (budget {seconds:.0f} s)", flush=True)
    try:
        with deadline(seconds):
            fn(ctx, rec, budget)
        rec["ok"] = True
        rec["error"] = None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure is a result here, SystemExit included
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["traceback"] = traceback.format_exc(limit=8)[-3000:]
        print(f"{name} FAILED: {rec['error']}", flush=True)
    rec["seconds"] = round(budget.used(), 1)
    return rec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GpuMemorySampler:
    """Peak memory in use on the GPU while a subprocess runs, from nvidia-smi twice a second, less
    what was in use before. This process holds no CUDA context then, so the figure is the
    subprocess's (allocator cache and CUDA context included, unlike max_memory_allocated)."""

    def __init__(self):
        self.smi = shutil.which("nvidia-smi")
        # The subprocess's GPU 0 is the first visible one (nvidia-smi -i takes an index or a UUID).
        self.gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        self.baseline = self._read()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if self.baseline is not None:
            self._thread.start()

    def _read(self) -> float | None:
        if self.smi is None:
            return None
        try:
            out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", self.gpu],
                                 capture_output=True, text=True, timeout=10).stdout
            return float(out.split()[0]) / 1024  # MiB -> GiB
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            now = self._read()
            if now is not None:
                self.peak = max(self.peak, now)

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        return None if self.baseline is None else round(self.peak - self.baseline, 2)


@dataclass
class Ran:
    returncode: int
    seconds: float
    output: str
    peak_gpu_gb: float | None


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict, sample_gpu: bool = False) -> Ran:
    """Run `cmd` with its output in `log`; on a timeout or interruption its whole process group
    is killed (the DeepSpeed launcher's ranks are its grandchildren). It runs in the log's
    folder: `python -m` puts the working directory first on sys.path, and from the checkout its
    aunet/ (no compiled module on a machine that installed the wheel) would shadow the package."""
    print("$ " + " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sampler = GpuMemorySampler() if sample_gpu else None
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except BaseException as e:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise PartTimeout(f"`{' '.join(cmd[:6])} ...` ran past {timeout:.0f} s (log: {log})") from None
            raise
        finally:
            peak = sampler.stop() if sampler else None
    return Ran(rc, time.monotonic() - started, log.read_text(errors="replace"), peak)


def require_success(ran: Ran, what: str, log: Path) -> None:
    tail = "\n".join(ran.output.splitlines()[-25:])
    check(ran.returncode == 0, f"{what} exited with {ran.returncode} (log: {log}):\n{tail}")


# ---------------------------------------------------------------------------------------------
# setup: offline installation from the wheelhouse


def import_error(env: dict) -> str | None:
    """None when aunet and DeepSpeed import in a fresh interpreter, else its error. A child
    process, so that this one neither holds a CUDA context nor keeps a broken half-import."""
    proc = subprocess.run([sys.executable, "-c", "import aunet, deepspeed"], env=env, cwd=HERE,
                          capture_output=True, text=True, timeout=300)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]


def install_from_wheelhouse(wheelhouse: Path, packages: list[str], runner=subprocess.run, extra: tuple = ()) -> list[str]:
    """`pip install --no-index --find-links WHEELHOUSE PACKAGES`; on a Python whose packages the
    system manages (PEP 668), again with --break-system-packages: a throw-away GPU machine is
    what this runs on. Returns the command that succeeded; raises with pip's output otherwise."""
    base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
            "--find-links", str(wheelhouse), *extra, *packages]
    proc = runner(base, capture_output=True, text=True)
    if proc.returncode != 0 and "externally-managed-environment" in (proc.stdout or "") + (proc.stderr or ""):
        base = [*base[:4], "--break-system-packages", *base[4:]]
        proc = runner(base, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"{' '.join(base)} failed:\n{((proc.stdout or '') + (proc.stderr or ''))[-3000:]}")
    importlib.invalidate_caches()
    return base


def source_digest(package: Path) -> dict[str, str]:
    return {str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts}


def stale_files() -> list[str]:
    """Python files of the installed aunet that differ from this checkout's (a wheelhouse
    built before the last edit would test old code)."""
    import aunet

    installed, checkout = source_digest(Path(aunet.__file__).parent), source_digest(REPO / "aunet")
    return sorted(k for k in installed.keys() | checkout.keys() if installed.get(k) != checkout.get(k))


def part_setup(ctx: "Context", rec: dict, budget: Budget) -> None:
    missing = [m for m in ("aunet", "deepspeed") if importlib.util.find_spec(m) is None]
    rec["missing_before"] = missing
    if missing:
        check(ctx.wheelhouse.is_dir(), f"{' and '.join(missing)} not installed and there is no wheelhouse at "
              f"{ctx.wheelhouse} (build it with `make gpu-wheelhouse` and bring it along)")
        rec["install_command"] = " ".join(install_from_wheelhouse(ctx.wheelhouse, ["aunet", "deepspeed"]))
        # Installed is not yet importable: a dependency missing from the wheelhouse shows here.
        error = import_error(dict(os.environ))
        check(error is None, f"still not importable after the offline install: {error}")
    stale = stale_files()
    if stale and not missing and any(ctx.wheelhouse.glob("aunet-*.whl")):
        # An aunet that an earlier run installed on this machine; the wheelhouse may be newer.
        install_from_wheelhouse(ctx.wheelhouse, ["aunet"], extra=("--force-reinstall", "--no-deps"))
        for name in [n for n in sys.modules if n == "aunet" or n.startswith("aunet.")]:
            del sys.modules[name]
        rec["reinstalled_aunet"] = True
        stale = stale_files()
    import aunet

    rec.update(aunet=aunet.__version__, aunet_path=str(Path(aunet.__file__).parent),
               deepspeed=importlib.metadata.version("deepspeed"))
    rec["summary"] = f"aunet {rec['aunet']}, deepspeed {rec['deepspeed']}" + (
        f"; installed {' and '.join(missing)} offline from the wheelhouse" if missing else "; already installed")
    check(not stale, f"the installed aunet differs from this checkout in {len(stale)} files ({', '.join(stale[:4])}): "
          "rebuild the wheelhouse (make gpu-wheelhouse)")


# ---------------------------------------------------------------------------------------------
# environment


def part_environment(ctx: "Context", rec: dict, budget: Budget) -> None:
    """Versions and tools. No CUDA context is created here (see the module doc)."""
    import torch

    from aunet.training.accelerator import ensure_ds_accelerator

    rec.update(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
               ds_accelerator=ensure_ds_accelerator(), cpus=os.cpu_count())
    warnings = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rec.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                   capability=f"{props.major}.{props.minor}")
        # Where DeepSpeed's just-in-time op builds look for the CUDA toolkit (torch's search).
        from torch.utils.cpp_extension import CUDA_HOME

        nvcc = CUDA_HOME and shutil.which("nvcc", path=str(Path(CUDA_HOME) / "bin"))
        rec["nvcc"] = nvcc or None
        if not nvcc:
            # The trainer's DeepSpeed AdamW on GPUs is FusedAdam, an op DeepSpeed compiles on first use.
            warnings.append("no CUDA toolkit (nvcc): DeepSpeed cannot JIT-build FusedAdam, the trainer's optimizer on GPUs")
    compiler = shutil.which("cc") or shutil.which("gcc")
    rec["c_compiler"] = compiler
    if not compiler:
        warnings.append("no C compiler: Triton builds its launcher with one, so torch.compile will fail")
    rec["warnings"] = warnings
    rec["summary"] = (f"{rec.get('gpu', 'CPU')}, torch {torch.__version__}, Python {rec['python']}"
                      + (f"; WARNING {'; '.join(warnings)}" if warnings else ""))
    check(ctx.plan.smoke or torch.cuda.is_available(), "no GPU visible")


# ---------------------------------------------------------------------------------------------
# train: ~100M AU-Net-3 under the DeepSpeed launcher, resume, export, eval, generate


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


def launch_training(ctx: "Context", config: Path, steps: int, log: Path, budget: Budget) -> Ran:
    """`deepspeed --num_gpus 1 aunet/train.py --config CONFIG key=value ...` (the launcher run
    as a module, so that a scripts folder missing from PATH does not matter)."""
    import aunet

    plan = ctx.plan
    train_py = Path(aunet.__file__).parent / "train.py"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", str(free_port()),
           str(train_py), "--config", str(config), f"steps={steps}", "distributed.fsdp_type=full_shard",
           "distributed.model_dtype=bf16", f"distributed.compile={'true' if plan.compile_training else 'false'}"]
    return run_logged(cmd, log, budget.left(), ctx.env, sample_gpu=not plan.smoke)


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
               compile=plan.compile_training)
    t = time.monotonic()
    rec["data"] = build_training_data(plan, work)
    rec["segment_s"] = round(time.monotonic() - t, 1)
    config = work / "config.yaml"
    import yaml

    config.write_text(yaml.safe_dump(train_config_raw(plan, work / "data", dump), sort_keys=False))

    first = launch_training(ctx, config, plan.steps, logs / "train.log", budget)
    require_success(first, "training", logs / "train.log")
    records = metrics_records(dump)
    rec["run1"] = {"seconds": round(first.seconds, 1), "peak_gpu_gb": first.peak_gpu_gb, **train_summary(records)}
    ckpts = dump / "checkpoints"
    check(latest_complete(ckpts) == plan.steps, f"no complete checkpoint at step {plan.steps} in {ckpts}")

    second = launch_training(ctx, config, plan.resume_steps, logs / "resume.log", budget)
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
                      f"{(r2['bytes_per_s'] or 0) / 1e3:.0f}k bytes/s")


# ---------------------------------------------------------------------------------------------
# generation: cached logits against the full forward pass, in bf16

TOLERANCE = (
    "bf16 rounds every activation to 8 significant bits, and the cached and the full pass sum in "
    "different orders (single-query attention over a cache, GEMV instead of GEMM), so they cannot "
    "agree bit for bit. Both are measured against the same weights run in fp32 (TF32 off): the "
    "cached logits pass when their largest error is at most 2x the full bf16 pass's largest error "
    "(as accurate as the full pass, within the spread of rounding), and the full bf16 pass itself "
    "must stay within 10% relative RMS of fp32 (so that a broken bf16 path cannot pass by "
    "making the allowance huge)."
)


def compare(a, b) -> dict:
    d = (a.double() - b.double())
    return {"max_abs": float(d.abs().max()), "rms_rel": float(d.pow(2).mean().sqrt() / b.double().pow(2).mean().sqrt())}


@contextmanager
def exact_fp32():
    """fp32 matmuls without TF32, for the reference pass."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


def generation_text(n: int) -> bytes:
    from corpora import stdlib_docs

    text = b"".join(stdlib_docs(4 * n + 20_000))
    return text[10_000: 10_000 + n]  # past the licence headers that open many files


def part_generation(ctx: "Context", rec: dict, budget: Budget) -> None:
    import torch

    from aunet.inference.generate import Generator
    from aunet.model import HierarchicalTransformer
    from aunet.model.flops import param_count

    plan, device = ctx.plan, ctx.device
    cfg = train_model_args(plan)
    torch.manual_seed(0)
    with device:  # parameters are created and initialised there, not on the host
        model = HierarchicalTransformer(cfg.model).to(torch.bfloat16).eval()
    reference = copy.deepcopy(model).float()  # the very same (bf16-representable) weights
    text = generation_text(plan.gen_prompt_bytes + plan.gen_pushed_bytes)
    prompt, rest = text[: plan.gen_prompt_bytes], text[plan.gen_prompt_bytes:]
    rec.update(params=param_count(cfg.model), prompt_bytes=len(prompt), pushed_bytes=len(rest), tolerance=TOLERANCE)
    reset_peak(device)
    gen = Generator(model, cfg.data.regex.strategy)
    (first,) = gen.prefill([prompt], room=len(rest))
    sync(device)
    t = time.monotonic()
    cached = torch.stack([first, *(gen.step([b])[0] for b in rest)])
    sync(device)
    rec["cached_bytes_per_s"] = round(len(rest) / (time.monotonic() - t), 1)
    state = gen.state
    tokens = torch.tensor([state.tokens[0]], device=device)
    levels = torch.tensor([state.levels[0]], device=device)
    with torch.no_grad():
        full = model(tokens, levels)[0][0, len(prompt):]
        with exact_fp32():
            exact = reference(tokens, levels)[0][0, len(prompt):]
    rec["peak_memory_gb"] = peak_gb(device)
    rec["stage_steps"] = state.stage_steps[0].tolist()
    rec["cached_vs_full_bf16"] = compare(cached, full)
    rec["cached_bf16_vs_fp32"] = compare(cached, exact)
    rec["full_bf16_vs_fp32"] = compare(full, exact)
    floor = rec["full_bf16_vs_fp32"]["max_abs"]
    err = rec["cached_bf16_vs_fp32"]["max_abs"]
    rec["summary"] = (f"max |cached - fp32| {err:.3g} vs full bf16's {floor:.3g} (limit 2x); "
                      f"max |cached - full bf16| {rec['cached_vs_full_bf16']['max_abs']:.3g}")
    del model, reference, gen, state
    free_memory(device)
    check(rec["full_bf16_vs_fp32"]["rms_rel"] <= 0.1, f"the full bf16 pass is {rec['full_bf16_vs_fp32']['rms_rel']:.1%} RMS from fp32")
    check(err <= 2 * floor, f"cached bf16 logits are {err:.3g} from fp32, more than 2x the full bf16 pass's {floor:.3g}")


# ---------------------------------------------------------------------------------------------
# throughput: bytes/s, MFU and peak memory of a bf16 training step


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def flat_args(width: int, layers: int, plan: Plan, vocab: int):
    from aunet.config import BlockArgs, ModelArgs

    return ModelArgs(dimensions=[width], layers=[layers], head_dims=[plan.flat_head], sliding_windows=[-1],
                     max_seqlens=[-1], residuals=[], vocab_size=vocab,
                     block=BlockArgs(multiple_of=plan.flat_multiple_of, rope_theta=500000.0))


# Among flat shapes within 3% of the target FLOPs per byte, the one whose width / depth is
# closest to this (a 2048-wide, 20-24 block model, the usual 1B shape).
ASPECT = 96


def flat_peer(target: float, seq_len: int, plan: Plan, vocab: int = 258, bytes_per_token: float = 1.0):
    """The flat transformer (full causal attention) whose training FLOPs per byte are closest to
    `target`; a BPE model's cost per byte is its cost per token over bytes per token."""
    from aunet.model.flops import flops_per_byte

    shapes = []
    for width in plan.flat_widths:
        for layers in range(2, 49):
            args = flat_args(width, layers, plan, vocab)
            per_byte = flops_per_byte(args, seq_len).total / bytes_per_token
            shapes.append((abs(math.log(per_byte / target)), abs(math.log(width / layers / ASPECT)), args))
    best = min(s[0] for s in shapes)
    return min((s for s in shapes if s[0] <= best + 0.03), key=lambda s: s[1])[2]


@dataclass
class Bench:
    """One throughput subject: its model, its sequence (in positions) and how to make a batch."""

    name: str
    args: object
    seq_len: int
    bytes_per_position: float
    batch: object  # batch_size -> (inputs, levels or None, targets), on the CPU


def aunet2_bench(plan: Plan) -> Bench:
    from aunet.config import load_config
    from bench_model import text_batch

    cfg, _ = load_config(REPO / plan.throughput_config)
    T, top = plan.throughput_seq_len or cfg.data.seq_len, max(plan.batches)
    tokens, levels = text_batch(cfg.data.regex.strategy, top, T + 1)
    return Bench("AU-Net-2", cfg.model, T, 1.0,
                 lambda B: (tokens[:B, :-1], levels[:B, :-1], tokens[:B, 1:]))


def flat_bench(plan: Plan, target: float, seq_bytes: int, bpe: bool) -> Bench:
    import torch

    vocab = plan.bpe_vocab if bpe else 258
    bpt = plan.bytes_per_token if bpe else 1.0
    T = round(seq_bytes / bpt)
    args = flat_peer(target, T, plan, vocab, bpt)
    top = max(plan.batches)
    # Ids do not change a dense model's speed: random tokens stand for bytes / BPE ids.
    ids = torch.randint(0, 256 if not bpe else vocab, (top, T + 1), generator=torch.Generator().manual_seed(0))
    return Bench("BPE transformer" if bpe else "byte transformer", args, T, bpt,
                 lambda B: (ids[:B, :-1], None, ids[:B, 1:]))


def compile_blocks(model) -> None:
    """Compile each transformer block (regional compilation): the blocks of a stage share one
    compiled graph, so compiling takes seconds where the whole model takes minutes; what is
    left outside (pooling, the output head) is a small share of the step."""
    import torch

    from aunet.model.layers import Block

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for module in model.modules():
        if isinstance(module, Block):
            module.compile()


def training_step(model, optimizer, batch, device):
    """One bf16 (autocast) forward + backward + AdamW step as a closure. Nothing in it reads a
    value back to the host, so consecutive steps queue without waiting."""
    import torch

    inputs, levels, targets = (None if t is None else t.to(device, non_blocking=True) for t in batch)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, loss = model(inputs, levels, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, n: int, device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - t


def try_batch(model, optimizer, bench: Bench, B: int, device) -> str | None:
    """Two steps at batch B (AdamW's moments exist from the second, so its memory is the
    steady state); None if they ran, else the error. Memory is freed either way."""
    error = None
    try:
        step = training_step(model, optimizer, bench.batch(B), device)
        step()
        step()
        sync(device)
    except Exception as e:  # noqa: BLE001 - an OOM is the answer; anything else is re-raised below
        if not is_oom(e):
            raise
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    optimizer.zero_grad(set_to_none=True)
    step = None
    free_memory(device)
    return error


def largest_batch(model, optimizer, bench: Bench, plan: Plan, device, budget: Budget) -> tuple[int | None, list]:
    """The largest of plan.batches that runs (eagerly: compiled steps keep fewer activations),
    trying them in increasing order until one runs out of memory or 40% of the budget is gone."""
    best, tried = None, []
    for B in plan.batches:
        if best is not None and budget.used() > 0.4 * budget.seconds:
            tried.append({"batch": B, "skipped": "time"})
            break
        error = try_batch(model, optimizer, bench, B, device)
        tried.append({"batch": B, "fits": error is None, **({"error": error} if error else {})})
        if error:
            break
        best = B
    return best, tried


def measure(model, optimizer, bench: Bench, B: int, plan: Plan, device) -> dict:
    step = training_step(model, optimizer, bench.batch(B), device)
    timed(step, plan.warmup_steps, device)  # compiles, and settles the allocator
    reset_peak(device)
    seconds = timed(step, plan.timed_steps, device)
    bytes_per_s = plan.timed_steps * B * bench.seq_len * bench.bytes_per_position / seconds
    return {"step_s": round(seconds / plan.timed_steps, 4), "bytes_per_s": round(bytes_per_s, 1), "peak_memory_gb": peak_gb(device)}


# Below this many seconds left, a part reports its eager speed instead of starting to compile.
MIN_COMPILE_S = 20


def run_throughput(ctx: "Context", rec: dict, budget: Budget, bench: Bench) -> None:
    import torch

    from aunet.model import HierarchicalTransformer
    from aunet.model.flops import flops_per_byte, param_count

    plan, device = ctx.plan, ctx.device
    free_memory(device)  # what a failed earlier part left cached
    useful = flops_per_byte(bench.args, bench.seq_len).total / bench.bytes_per_position
    executed = flops_per_byte(bench.args, bench.seq_len, padded=True).total / bench.bytes_per_position
    rec.update(model=bench.name, params=param_count(bench.args), dimensions=bench.args.dimensions,
               layers=bench.args.layers, seq_len=bench.seq_len, bytes_per_position=bench.bytes_per_position,
               vocab=bench.args.vocab_size, flops_per_byte=useful, executed_flops_per_byte=executed,
               precision="bf16 autocast; fp32 weights, gradients and AdamW moments (fused AdamW on GPUs)")
    if plan.compile_throughput:
        torch._dynamo.reset()  # no compiled graph of an earlier part lingers (importing dynamo takes seconds)
    torch.manual_seed(0)
    with device:  # initialised on the GPU: 1.3B parameters take seconds on the host
        model = HierarchicalTransformer(bench.args)
    # fp32 master weights and moments, bf16 compute (autocast), as mixed-precision training keeps them.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    try:
        B, rec["batches_tried"] = largest_batch(model, optimizer, bench, plan, device, budget)
        check(B is not None, f"batch {plan.batches[0]} does not fit")
        rec["batch"] = B
        rec["eager"] = measure(model, optimizer, bench, B, plan, device)
        result = rec["eager"]
        if plan.compile_throughput and budget.left() < MIN_COMPILE_S:
            rec["compiled"] = f"skipped: {budget.left():.0f} s left, compiling takes about {MIN_COMPILE_S} s"
        elif plan.compile_throughput:
            compile_blocks(model)
            rec["compiled"] = measure(model, optimizer, bench, B, plan, device)
            # The faster of the two is the model's speed (the same rule for every model).
            result = max(rec["eager"], rec["compiled"], key=lambda r: r["bytes_per_s"])
        rec["timed"] = "compiled" if result is rec.get("compiled") else "eager"
        rec.update(bytes_per_s=result["bytes_per_s"], peak_memory_gb=result["peak_memory_gb"],
                   mfu=result["bytes_per_s"] * useful / PEAK_BF16_FLOPS,
                   mfu_executed=result["bytes_per_s"] * executed / PEAK_BF16_FLOPS,
                   x_paper=result["bytes_per_s"] / PAPER_BYTES_PER_S)
        rec["summary"] = (f"batch {B}, {rec['timed']}: {result['bytes_per_s'] / 1e3:.1f}k bytes/s, MFU {rec['mfu']:.1%} "
                          f"({rec['mfu_executed']:.1%} executed), peak {result['peak_memory_gb']} GB")
    finally:
        del model, optimizer
        if plan.compile_throughput:
            torch._dynamo.reset()
        free_memory(device)


def part_throughput_aunet2(ctx: "Context", rec: dict, budget: Budget) -> None:
    run_throughput(ctx, rec, budget, aunet2_bench(ctx.plan))


def equal_flops_target(ctx: "Context") -> tuple[float, int]:
    """AU-Net-2's useful FLOPs per byte and sequence length (from the config, so the baselines
    are sized even when the AU-Net-2 part failed)."""
    from aunet.config import load_config
    from aunet.model.flops import flops_per_byte

    cfg, _ = load_config(REPO / ctx.plan.throughput_config)
    T = ctx.plan.throughput_seq_len or cfg.data.seq_len
    return flops_per_byte(cfg.model, T).total, T


def part_throughput_bytes(ctx: "Context", rec: dict, budget: Budget) -> None:
    target, T = equal_flops_target(ctx)
    run_throughput(ctx, rec, budget, flat_bench(ctx.plan, target, T, bpe=False))


def part_throughput_bpe(ctx: "Context", rec: dict, budget: Budget) -> None:
    target, T = equal_flops_target(ctx)
    run_throughput(ctx, rec, budget, flat_bench(ctx.plan, target, T, bpe=True))


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Context:
    plan: Plan
    workdir: Path
    wheelhouse: Path
    device: object = None
    env: dict = field(default_factory=dict)


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
    out = args.out or (args.workdir / "gpu_check.json" if plan.smoke else HERE / "results" / "gpu_check.json")
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
        "machine": platform.machine(), "paper_bytes_per_s": PAPER_BYTES_PER_S, "peak_flops": PEAK_BF16_FLOPS,
        "seconds": round(time.monotonic() - started, 1), "parts": parts, "ratios": ratios(parts),
    }
    print_tables(result)
    print(f"\n{sum(p['ok'] for p in parts.values())}/{len(parts)} parts ok in {result['seconds']:.0f} s")
    save(out, result)
    return 0 if all(p["ok"] for p in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
