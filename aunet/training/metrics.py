"""Training metrics summed on the accelerator and read on the host only when they are logged.

A micro-step adds device scalars to one device tensor (no host synchronisation); a logging step
all-reduces that tensor where it lives (NCCL accepts only accelerator tensors) and reads it
back once. The token count is the same for every batch, so it stays a Python integer.

Health follows the same rule: each optimizer step marks itself bad on the device when its loss
(on this rank) or the global gradient norm is not finite, and two device counters keep the
current and the longest run of consecutive bad steps. `health` reads them (after a MAX over the
ranks) only where the trainer asks: at logging steps and before each checkpoint.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import torch
import torch.distributed as dist

FIELDS = ("loss", "nats", "scored_bytes", "text_bytes")
#: Host-side sums, all-reduced with the device sums at logging steps: training FLOPs on the
#: batches' real positions and on the positions the model ran (`aunet.model.flops.batch_flops`).
WORK = ("useful_flops", "executed_flops")

#: Peak dense bf16 FLOP/s that MFU divides by (H100 and H200 SXM alike); on a CPU the figure is
#: only indicative.
PEAK_FLOPS = {"cuda": 989e12, "cpu": 1e12}


class DeviceMetrics:
    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.sums = torch.zeros(len(FIELDS), dtype=torch.float64, device=self.device)
        self.micro_steps = 0
        self.tokens = 0
        self.work = [0.0, 0.0]
        self._step_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self.runs = torch.zeros(2, dtype=torch.int64, device=self.device)  # [current, longest] bad run

    def add(self, loss: torch.Tensor, nats: torch.Tensor, scored: torch.Tensor, target_bytes: torch.Tensor, tokens: int) -> None:
        """One micro-batch: its loss, byte nats and scored bytes (from the model's forward) and
        the text bytes its targets stand for; all device tensors."""
        self.sums += torch.stack([t.to(torch.float64) for t in (loss.detach(), nats, scored, target_bytes.sum())])
        self._step_bad |= ~torch.isfinite(loss.detach())
        self.micro_steps += 1
        self.tokens += tokens

    def add_work(self, useful: float, executed: float) -> None:
        """One micro-batch's training FLOPs (host numbers, known from the batch before it runs)."""
        self.work[0] += useful
        self.work[1] += executed

    def end_step(self, grad_norm) -> None:
        """After the optimizer step: `grad_norm` is DeepSpeed's (a device tensor, a float, or
        None when it has none). DeepSpeed skips the update of a step whose norm is not finite
        and reports it as a float inf, a value already on the host."""
        bad = self._step_bad
        if torch.is_tensor(grad_norm):
            bad = bad | ~torch.isfinite(grad_norm.to(self.device))
        elif grad_norm is not None and not math.isfinite(grad_norm):
            bad = torch.ones_like(bad)
        current = (self.runs[0] + 1) * bad
        self.runs = torch.stack([current, torch.maximum(self.runs[1], current)])
        self._step_bad = torch.zeros_like(bad)

    def health(self, all_reduce=None) -> tuple[int, int]:
        """(bad steps ending at the last step, longest run of consecutive bad steps) on any
        rank: one MAX all-reduce and one host read."""
        runs = self.runs.clone()
        if all_reduce is not None:
            all_reduce(runs, op=dist.ReduceOp.MAX)
        current, longest = runs.tolist()
        return current, longest

    def reduced(self, all_reduce=None) -> torch.Tensor:
        """The sums over every rank, FIELDS then WORK, as a device tensor (`all_reduce` is
        torch.distributed.all_reduce when several ranks train)."""
        totals = torch.cat([self.sums, torch.tensor(self.work, dtype=self.sums.dtype, device=self.device)])
        if all_reduce is not None:
            all_reduce(totals)
        return totals

    def reset(self) -> None:
        self.sums.zero_()
        self.micro_steps = self.tokens = 0
        self.work = [0.0, 0.0]


def log_record(step: int, lr: float, totals: list[float], metrics: DeviceMetrics, elapsed: float, grad_norm,
               world: int, peak_flops: float) -> dict:
    """One metrics.jsonl record from the summed (all-reduced) totals of `DeviceMetrics`.
    `peak_flops`: the peak FLOP/s of all ranks together. MFU is on useful FLOPs (the batches'
    real positions); `executed_flops_per_byte` and `mfu_executed` count what the model ran,
    padding included; both are counted by the loader, batch by batch."""
    sums = dict(zip((*FIELDS, *WORK), totals))
    tokens = metrics.tokens * world
    return {
        "step": step,
        "loss": sums["loss"] / (metrics.micro_steps * world),
        "bpb": sums["nats"] / max(sums["scored_bytes"], 1.0) / math.log(2),
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        "bytes_per_s": sums["text_bytes"] / elapsed,
        "tokens_per_s": tokens / elapsed,
        "useful_flops_per_byte": sums["useful_flops"] / tokens,
        "executed_flops_per_byte": sums["executed_flops"] / tokens,
        "mfu": sums["useful_flops"] / elapsed / peak_flops,
        "mfu_executed": sums["executed_flops"] / elapsed / peak_flops,
    }


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record, less its step (booleans are not metrics)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class MetricsLog:
    """Records to `<dump_dir>/metrics.jsonl`, the console and the experiment trackers
    (`aunet.training.tracking`), on rank 0 only (`enabled`)."""

    def __init__(self, path: Path, enabled: bool, trackers: list | None = None):
        self.path, self.enabled, self.trackers = path, enabled, list(trackers or ())

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        parts = [f"step {record['step']}"] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k != "step"]
        print(" | ".join(parts), flush=True)
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(record["step"], values)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
