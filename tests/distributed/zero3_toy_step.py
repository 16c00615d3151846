"""One ZeRO-3 optimizer step on a toy module; run by the DeepSpeed launcher (see test_deepspeed.py).

Each rank writes what it observed to OUT_DIR/rank{R}.json; the test compares the ranks.
"""

import argparse
import json
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator, init_distributed

ensure_ds_accelerator()

import deepspeed  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


def main(out_dir: Path) -> None:
    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}},
        "steps_per_print": 1_000_000,
    }
    with deepspeed.zero.Init(config_dict_or_path=config):
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 1))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)

    weight = engine.module[0].weight
    local_shard = weight.ds_tensor.numel()
    with deepspeed.zero.GatheredParameters([weight]):
        before = weight.detach().clone()

    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(4, 16, generator=gen)
    y = x.sum(dim=1, keepdim=True)
    loss = torch.nn.functional.mse_loss(engine(x), y)
    engine.backward(loss)
    engine.step()

    with deepspeed.zero.GatheredParameters([weight]):
        after = weight.detach().clone()
    result = {
        "rank": rank,
        "world_size": world,
        "backend": dist.get_backend(),
        "zero_stage": engine.zero_optimization_stage(),
        "full_numel": weight.ds_numel,
        "local_shard_numel": local_shard,
        "loss": loss.item(),
        "changed": float((after - before).abs().max()),
        "after_checksum": float(after.double().sum()),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    # Leave together: a rank that exits while the other still talks to it over gloo can abort
    # in gloo's C++ threads ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--local_rank", type=int, default=-1, help="passed by the DeepSpeed launcher")
    main(parser.parse_args().out_dir)
