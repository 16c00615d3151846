"""Parts `setup` (aunet and DeepSpeed importable, installed offline from the wheelhouse when
they are not; the installed aunet is the checkout's) and `environment` (GPU, versions, and the
tools DeepSpeed and Inductor build with at run time).

aunet and torch are imported inside the functions: `setup` may have to install them first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from gpu_parts.plan import BENCHES, REPO, Context
from gpu_parts.running import Budget, CheckFailed, check


def import_error(env: dict) -> str | None:
    """None when aunet and DeepSpeed import in a fresh interpreter, else its error. A child
    process, so that this one neither holds a CUDA context nor keeps a broken half-import."""
    proc = subprocess.run([sys.executable, "-c", "import aunet, deepspeed"], env=env, cwd=BENCHES,
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
