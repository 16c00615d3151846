"""Train a few steps with the real trainer while counting host synchronisations and checking the
device of every tensor our code hands to a collective; run by the DeepSpeed launcher (see
test_cluster_training.py).

A call of Tensor.item / .cpu / .tolist / __int__ / __float__ / __bool__ made on the training
thread while `micro_step` runs (every micro-batch: forward, backward, optimizer step; logging
is outside it) is attributed to the first frame outside torch: our code (aunet/) or
DeepSpeed's (with its file and function). Device synchronisations (the accelerator's
`synchronize`, `torch.cuda.synchronize`) made there are counted too. Each rank writes
OUT_DIR/rank{R}.json.
"""

import argparse
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator

ensure_ds_accelerator()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from aunet.config import load_config  # noqa: E402
from aunet.training import trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AUNET = str(REPO / "aunet") + os.sep
TORCH = os.path.dirname(torch.__file__) + os.sep
SYNCS = ("item", "cpu", "tolist", "__int__", "__float__", "__bool__")


def caller_owner() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(TORCH):
        frame = frame.f_back
    name = frame.f_code.co_filename if frame is not None else "?"
    return "aunet" if name.startswith(AUNET) else "deepspeed" if f"{os.sep}deepspeed{os.sep}" in name else name


def deepspeed_site() -> str:
    """'file function' of the DeepSpeed frame that made the call (file relative to deepspeed/)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(TORCH):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename.split(f'{os.sep}deepspeed{os.sep}')[-1]} {frame.f_code.co_name}"


class Recorder:
    def __init__(self):
        self.active = False
        self.calls: Counter = Counter()
        self.where: Counter = Counter()
        self.device_syncs: Counter = Counter()
        self.deepspeed_at: Counter = Counter()
        self.micro_steps = 0
        self.collectives: list[dict] = []
        self.main = threading.get_ident()

    def install(self) -> None:
        for name in SYNCS:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _name=name, _original=original, **k):
                if self.active and threading.get_ident() == self.main:
                    owner = caller_owner()
                    self.calls[(owner, _name)] += 1
                    if owner == "aunet":
                        f = sys._getframe(1)
                        self.where[f"{f.f_code.co_filename}:{f.f_lineno}"] += 1
                    elif owner == "deepspeed":
                        self.deepspeed_at[deepspeed_site()] += 1
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, wrapped)
        step = trainer.micro_step

        def counted_step(*a, **k):
            self.active = True
            try:
                return step(*a, **k)
            finally:
                self.active = False
                self.micro_steps += 1

        trainer.micro_step = counted_step
        # Device synchronisations: the accelerator's (DeepSpeed's timers call it) and torch.cuda's.
        from deepspeed.accelerator import get_accelerator

        accel = get_accelerator()
        for owner, name in ((accel, "synchronize"), (torch.cuda, "synchronize")):
            original_sync = getattr(owner, name)

            def counted_sync(*a, _original=original_sync, _label=f"{type(owner).__name__}.{name}", **k):
                if self.active and threading.get_ident() == self.main:
                    self.device_syncs[f"{caller_owner()}:{_label}"] += 1
                return _original(*a, **k)

            setattr(owner, name, counted_sync)
        reduce = dist.all_reduce

        def recorded_reduce(tensor, *a, **k):
            if caller_owner() == "aunet":
                self.collectives.append({"device": str(tensor.device), "dtype": str(tensor.dtype)})
            return reduce(tensor, *a, **k)

        dist.all_reduce = recorded_reduce


def dynamo_counters() -> dict:
    """Graphs compiled and graph breaks, when the run compiled (distributed.compile)."""
    if "torch._dynamo" not in sys.modules:
        return {}
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"]["unique_graphs"], "graph_breaks": dict(counters["graph_break"])}


def main(out: Path, overrides: list[str]) -> None:
    rec = Recorder()
    rec.install()
    cfg, _ = load_config(REPO / "configs" / "tiny_aunet3.yaml", overrides)
    trainer.train(cfg)
    from deepspeed.accelerator import get_accelerator

    report = {
        "micro_steps": rec.micro_steps,
        "syncs": {f"{owner}:{name}": n for (owner, name), n in rec.calls.items()},
        "ours_at": dict(rec.where),
        "device_syncs": dict(rec.device_syncs),
        "deepspeed_at": dict(rec.deepspeed_at),
        "collectives": rec.collectives,
        "device": str(torch.device(get_accelerator().current_device_name())),
        "dynamo": dynamo_counters(),
    }
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--local_rank", type=int, default=-1)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    main(a.out, a.overrides)
