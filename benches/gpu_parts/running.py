"""Running parts: budgets, errors, subprocesses (with the GPU memory they use)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


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
    collective must not take the later parts' time). Nestable: an inner deadline never outlives
    the one around it, and the outer one goes on counting once the inner one is over."""
    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]
    started = time.monotonic()
    own = min(seconds, outer_left) if outer_left else seconds

    def fire(signum, frame):
        raise PartTimeout(f"over its {own:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, own)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 0.01))


def optional_phase(rec: dict, key: str, seconds: float, fn):
    """`fn()` under its own deadline inside a part (a compile that may not finish): on overrun
    `rec[key]` says so and None is returned, so the part keeps what it measured before."""
    try:
        with deadline(seconds):
            return fn()
    except PartTimeout as e:
        rec[key] = f"ran out of time ({e}); the eager figures stand"
        print(f"{key}: {rec[key]}", flush=True)
        return None


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
