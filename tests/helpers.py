"""Small helpers shared by the test suites."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    return str(Path(sys.executable).parent / name)


def cpu_dist_env() -> dict[str, str]:
    """Environment for multi-process CPU runs: DeepSpeed on its CPU accelerator, one thread per rank."""
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    # The launcher and the ranks find the venv's ninja (DeepSpeed JIT-builds its CPU collectives).
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_deepspeed(script: Path, *args: str, ranks: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `script` under the real DeepSpeed launcher with `ranks` local CPU processes."""
    cmd = [
        venv_script("deepspeed"),
        "--num_gpus", str(ranks),
        "--master_port", str(free_port()),
        str(script),
        *args,
    ]
    return subprocess.run(cmd, env=cpu_dist_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
