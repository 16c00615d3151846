"""Train AU-Net: `deepspeed aunet/train.py --config cfg.yaml [key.sub=value ...]`, or
`python aunet/train.py ...` for one process. The loop is `aunet.training.trainer.Trainer`."""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a file (what the DeepSpeed launcher does), Python puts aunet/ itself first on the
    # path, where aunet/config, aunet/data, aunet/model and aunet/cli.py would shadow any
    # top-level module of those names that a dependency imports. Only `python -P` (or
    # PYTHONSAFEPATH=1) stops Python from adding it, and the launcher passes neither, so the
    # entry removes it before anything else is imported. `deepspeed --module aunet.train`
    # needs no such step.
    sys.path.pop(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="A rerun of the same command resumes from the run's newest complete checkpoint; a run without one may start "
               "from other weights with checkpoint.init_ckpt_path=DIR (an `aunet export` directory, or a checkpoint directory: "
               "weights only, fresh optimizer, schedule and data). DeepSpeed checkpoints are pickles, loaded with "
               "torch.load(weights_only=False), which can run code stored in the file: only resume or initialise from "
               "checkpoints you trust.")
    parser.add_argument("--config", required=True, help="YAML config (configs/tiny_aunet3.yaml, ...)")
    parser.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the DeepSpeed launcher
    parser.add_argument("--stop-at", type=int, metavar="STEP", help="checkpoint and stop after this step (the schedule still runs to `steps`): for time-limited jobs")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # Imported once the arguments parse, so that --help and usage errors answer without loading torch.
    from aunet.config import ConfigError, load_config

    try:
        cfg, unused = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"aunet/train.py: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("WORLD_SIZE") is None:
        # `python aunet/train.py`: a single process; DeepSpeed still wants a rendezvous.
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"})
        os.environ.setdefault("MASTER_PORT", "29511")
    from aunet.data.sources import VALIDATION, resolve_sources

    try:
        resolve_sources(cfg)  # missing data fails before any process group is set up
        resolve_sources(cfg, VALIDATION)
    except (FileNotFoundError, ValueError) as e:
        print(f"aunet/train.py: error: {e}", file=sys.stderr)
        return 2
    import torch.distributed as dist

    from aunet.training.resume import ResumeError
    from aunet.training.trainer import NonFiniteTraining, train

    try:
        train(cfg, unused, stop_at=args.stop_at)
    except (ResumeError, NonFiniteTraining) as e:  # raised on every rank alike, after a collective
        print(f"aunet/train.py: error: {e}", file=sys.stderr, flush=True)
        if dist.is_initialized():
            # Every rank is here (the error follows a collective). A process group still alive at
            # interpreter exit can abort it ("terminate called ..."), turning rc 1 into a crash.
            dist.destroy_process_group()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
