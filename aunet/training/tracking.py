"""Experiment trackers: TensorBoard and Weights & Biases, fed the records of metrics.jsonl.

Rank 0 only, at logging and validation steps only: a tracker gets the host numbers the trainer
has already read (`MetricsLog.write`), so it adds no device synchronisation. Each library is
imported only when its switch is on (`logging.tensorboard`, `logging.wandb`; the `track`
extra). A resumed run continues the same curves: TensorBoard drops the events an interrupted
run wrote after the checkpoint it resumes from (`purge_step`), and the W&B run id is derived
from dump_dir (or given), with `resume="allow"`.

DeepSpeed's own monitors (`tensorboard`, `wandb` in its config) are not used: they log
DeepSpeed's loss and learning rate from inside `engine.step`, not our bpb, bytes/s, MFU and
bad-step counters, and they log from every step, where ours log at logging steps only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aunet.config.train import TrainArgs, WandbArgs


class TensorBoardTracker:
    """Event files under `<dump_dir>/tensorboard/`, one scalar series per metrics.jsonl key."""

    def __init__(self, directory: Path, start_step: int, config_yaml: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("logging.tensorboard needs the tensorboard package: pip install 'aunet[track]'") from e
        # purge_step: events at or after it, left by a run that went on past the checkpoint this
        # one resumes from, are dropped, so the curve has one point per step.
        self.writer = SummaryWriter(str(directory), purge_step=start_step + 1 if start_step else None)
        if not start_step:
            self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # at logging steps only: a reader sees each record as it is written

    def close(self) -> None:
        self.writer.close()


def wandb_run_id(dump: Path) -> str:
    """A run id that only the dump directory decides: the same run resumed keeps it."""
    return "aunet-" + hashlib.sha256(str(dump.resolve()).encode()).hexdigest()[:16]


class WandbTracker:
    def __init__(self, args: WandbArgs, dump: Path, name: str, config: dict):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("logging.wandb needs the wandb package: pip install 'aunet[track]'") from e
        self.run = wandb.init(project=args.project, entity=args.entity, name=args.name or name, group=args.group,
                              tags=args.tags or None, notes=args.notes, mode=args.mode, id=args.id or wandb_run_id(dump),
                              resume="allow", dir=str(dump), config=config)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(cfg: TrainArgs, dump: Path, start_step: int, config: dict, config_yaml: str) -> list:
    """The trackers the config switches on (rank 0 calls this; the others log nothing)."""
    trackers = []
    if cfg.logging.tensorboard:
        trackers.append(TensorBoardTracker(dump / "tensorboard", start_step, config_yaml))
    if cfg.logging.wandb is not None:
        trackers.append(WandbTracker(cfg.logging.wandb, dump, cfg.name, config))
    return trackers
