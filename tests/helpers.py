"""Small helpers shared by the test suites."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# DeepSpeed's CPU shared-memory collective names its /dev/shm buffers this way, port included
# (see aunet.training.accelerator.init_distributed).
DS_SHM_BUFFERS = "deepspeed_allreduce_buffer_*"


def examples(n: int) -> int:
    """A property test's number of examples: `n` under the "ci" hypothesis profile, scaled with
    the loaded profile's max_examples otherwise (tests/conftest.py; "dev" runs a fifth)."""
    from hypothesis import settings

    return max(10, n * settings.default.max_examples // 100)


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


def communicate_or_kill(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """`proc.communicate`, killing `proc`'s whole session if it times out or the test is interrupted.

    `proc` must have been started with ``start_new_session=True``. The DeepSpeed launcher's ranks
    are its grandchildren: killing only the launcher (what ``subprocess.run`` does) leaves them
    running, and a hung pair then spins on both cores for the rest of the test session.
    """
    try:
        return proc.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise


def run_in_session(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)`, killing every descendant on timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    out, err = communicate_or_kill(proc, timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# Set by tests/conftest.py before each test: whether it is marked distributed. `make test-fast`
# leaves the distributed tier out, so a launch from an unmarked test is an error, not a slow test.
LAUNCHER_ALLOWED = True


def deepspeed_cmd(script: Path | str, *args: str, ranks: int = 2, port: int | None = None) -> list[str]:
    """The real DeepSpeed launcher running `script` on `ranks` local processes."""
    assert LAUNCHER_ALLOWED, "this test starts the DeepSpeed launcher: mark it @pytest.mark.distributed"
    return [venv_script("deepspeed"), "--num_gpus", str(ranks), "--master_port", str(port or free_port()), str(script), *args]


def run_deepspeed(script: Path, *args: str, ranks: int = 2, timeout: float = 600, port: int | None = None) -> subprocess.CompletedProcess:
    """Run `script` under the real DeepSpeed launcher with `ranks` local CPU processes."""
    return run_in_session(deepspeed_cmd(script, *args, ranks=ranks, port=port), timeout, env=cpu_dist_env(), cwd=REPO_ROOT)
