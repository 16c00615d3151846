"""Build the real trainer on each rank, report what it set up (ZeRO stage, the checkpoint it
resumed from, the segmentation barrier's group) and train unless --no-train; run by the
DeepSpeed launcher (see test_cluster_settings.py). Each rank writes OUT_DIR/rank{R}.json.

--rank1-checkpoints DIR gives rank 1 its own view of the checkpoint directory: a directory of
symbolic links to rank 0's checkpoints that lists other steps than rank 0's does, as a network
file system's cached listing can.
"""

import argparse
import json
import os
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator

ensure_ds_accelerator()

from aunet.config import load_config  # noqa: E402
from aunet.training.trainer import Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--rank1-checkpoints")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--local_rank", type=int, default=-1)  # given by the launcher
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg, _ = load_config(args.config, args.overrides)
    if args.rank1_checkpoints and os.environ.get("RANK") == "1":
        cfg.checkpoint.path = args.rank1_checkpoints
    trainer = Trainer(cfg)
    report = {"rank": trainer.rank, "zero_stage": trainer.engine.zero_optimization_stage(),
              "candidates": trainer.candidates, "resumed_step": trainer.step,
              "engine_global_steps": trainer.engine.global_steps, "segmentation": trainer.segmentation,
              # ZeRO-3 marks the parameters it partitions (ds_id); whole parameters hold every element here.
              "partitioned_params": sum(hasattr(p, "ds_id") for p in trainer.engine.module.parameters()),
              "local_elements": sum(p.numel() for p in trainer.engine.module.parameters()),
              "communication_data_type": str(trainer.engine.communication_data_type)}
    if args.no_train:
        trainer.close()
    else:
        trainer.train()
    report["final_step"] = trainer.step
    (args.out / f"rank{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
