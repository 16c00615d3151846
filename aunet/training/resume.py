"""Which checkpoint a rerun resumes from, decided the same way on every rank.

Candidates are the complete checkpoints (`aunet.training.checkpoint.complete_steps`) as rank 0
lists them, handed to every rank (`candidate_steps`): ranks on a network file system can list
different files (NFS caches directory listings per client, so a rank may not see the newest
step yet, or still see a pruned one), and ranks that resumed from different steps would pair
up different collectives or, worse, train on mixed partitions. Newest first, for each one:

1. Its stored config must be this run's in what the weights depend on (the comparison of
   `checkpoint.init_ckpt_path`, `init_weights.incompatibilities`), and its world size this
   run's: otherwise the run stops with an error naming the checkpoint and every differing key,
   before DeepSpeed would fail on a tensor size. A different config is a mistake to fix, not
   damage, so there is no fallback past it.
2. Every rank recomputes the CRC-32s of its 1/W share of the files (`checkpoint.verify`) and
   reads its own loader state; a problem is printed by the rank that saw it, naming the file
   (a rank that cannot read the checkpoint's marker at all reports that).
3. One all-reduce (MAX) tells every rank whether any rank saw a problem, so all ranks take the
   same decision: load this one, or warn and try the previous complete checkpoint.

If complete checkpoints exist but none passes, the run stops rather than start from scratch
(which would then prune the damaged ones): nothing is deleted, and the error lists them.
"""

from __future__ import annotations

import json
from pathlib import Path

from aunet.config import ConfigError
from aunet.model.convert import PARAM_LAYOUT
from aunet.training.checkpoint import MARKER, complete_steps, read_marker, tag_for, verify
from aunet.training.init_weights import incompatibilities


class ResumeError(RuntimeError):
    """No checkpoint this run can resume from, though it has some."""


def candidate_steps(root: Path, rank: int, from_rank0) -> list[int]:
    """The complete checkpoints' steps, oldest first, as rank 0 lists them; `from_rank0(value)`
    is the collective that returns rank 0's value on every rank."""
    return from_rank0(complete_steps(root) if rank == 0 else None)


def resume(engine, loader, root: Path, steps: list[int], cfg, rank: int, world: int, any_rank) -> tuple[int | None, set[int]]:
    """Load the newest usable checkpoint of `steps` (`candidate_steps`, the same list on every
    rank) into `engine` and `loader`. Returns (its step, or None when `steps` is empty; the
    steps found damaged). `any_rank(flags)` is the collective: a list of bools in, for each the
    OR over every rank out."""
    damaged: set[int] = set()
    for step in reversed(steps):
        directory = root / tag_for(step)
        try:
            check_same_run(directory, cfg, world)
            problems = verify(directory, rank, world)
        except (OSError, ValueError) as e:  # this rank does not see the marker rank 0 listed
            problems = [f"{directory / MARKER}: unreadable on this rank ({e})"]
        other_data = None
        if not problems:
            problems, other_data = load_loader_state(loader, directory, rank)
        for problem in problems:
            print(f"warning: rank {rank}: checkpoint {directory} is damaged: {problem}", flush=True)
        bad, elsewhere = any_rank([bool(problems), other_data is not None])
        if elsewhere:  # every rank stops here together, before any collective of DeepSpeed's
            raise ResumeError(f"checkpoint {directory}: {other_data or 'another rank: its loader state is for other data'}")
        if not bad:
            load_engine(engine, root, step)
            return step, damaged
        damaged.add(step)
        if rank == 0:
            print(f"warning: not resuming from {directory} (damaged, see above); trying the previous complete checkpoint",
                  flush=True)
    if steps:
        raise ResumeError(f"{root}: every complete checkpoint ({', '.join(tag_for(s) for s in steps)}) is damaged (see the "
                          "warnings above, which name the files); none was loaded or deleted. Restore them, or move them away "
                          "to start the run afresh")
    return None, damaged


def check_same_run(directory: Path, cfg, world: int) -> None:
    marker = read_marker(directory)
    if "config" in marker:
        try:
            problems = incompatibilities(marker["config"], cfg, str(directory), "the checkpoint")
        except ConfigError as e:
            raise ResumeError(f"checkpoint {directory}: its stored config does not load: {e}") from None
        if problems:
            raise ResumeError(f"checkpoint {directory} was written with another config: {'; '.join(problems)}. Resume with "
                              "the config it was saved with (its COMPLETE.json holds it), or give this run its own dump_dir "
                              "or checkpoint.path")
        if marker.get("param_layout") != PARAM_LAYOUT:
            raise ResumeError(f"checkpoint {directory} was saved before the Q/K/V and W1/W3 projections were fused "
                              "(its optimizer state is per split parameter, and cannot be resumed into today's model). "
                              f"Start a new run from its weights: checkpoint.init_ckpt_path={directory} (converted on "
                              "load), with its own dump_dir or checkpoint.path")
    saved_stage, stage = marker.get("zero_stage"), cfg.distributed.zero
    if saved_stage is not None and saved_stage != stage:
        raise ResumeError(f"checkpoint {directory} was written at ZeRO stage {saved_stage}, this run is at stage {stage} "
                          "(distributed.fsdp_type / zero_stage): DeepSpeed partitions differ per stage; resume at stage "
                          f"{saved_stage}, or `aunet export` it and start a new run from the export (checkpoint.init_ckpt_path)")
    saved_world = marker.get("world_size")
    if saved_world is not None and saved_world != world:
        raise ResumeError(f"checkpoint {directory} was written by {saved_world} ranks, this run has {world}: the ZeRO "
                          "partitions and loader states are per rank; resume on as many ranks")


def load_loader_state(loader, directory: Path, rank: int) -> tuple[list[str], str | None]:
    """Restore this rank's loader state. Returns (damage found, naming the file; a message if
    the state is sound but for other data: other sources, ranks or world size).
    `PackedLoader.load_state_dict` overwrites every field, so a later successful load undoes a
    partial one."""
    path = directory / f"loader_rank{rank}.json"
    try:
        state = json.loads(path.read_text())
    except OSError as e:
        return [f"{path}: unreadable ({e.strerror or e})"], None
    except ValueError as e:
        return [f"{path}: not JSON ({e})"], None
    try:
        loader.load_state_dict(state)
    except ValueError as e:
        if str(e).startswith("loader state is for"):  # the loader's own check: other sources or ranks
            return [], f"{path}: {e}"
        return [f"{path}: not a loader state (ValueError: {e})"], None
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        return [f"{path}: not a loader state ({type(e).__name__}: {e})"], None
    return [], None


def load_engine(engine, root: Path, step: int) -> None:
    load_path, _ = engine.load_checkpoint(str(root), tag=tag_for(step), load_lr_scheduler_states=False)
    if load_path is None:  # DeepSpeed only logs a warning when it finds nothing to load
        raise ResumeError(f"checkpoint {root / tag_for(step)}: DeepSpeed found nothing to load in it")
