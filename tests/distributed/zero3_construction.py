"""Build a ~300M-parameter AU-Net with the trainer's own `build_model`; run by the DeepSpeed
launcher (see test_cluster_training.py) with 1 or 2 ranks.

Each rank writes OUT_DIR/rank{R}.json: the elements of its partitions, the model's elements,
the growth of its peak RSS during construction, which small parameters ZeRO-3 keeps whole, and
(rank 0) a digest of the full weights gathered parameter by parameter.
"""

import argparse
import hashlib
import json
import resource
from pathlib import Path

from aunet.training.accelerator import ensure_ds_accelerator, init_distributed

ensure_ds_accelerator()

import deepspeed  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from aunet.config import load_config  # noqa: E402
from aunet.training.ds_config import deepspeed_config  # noqa: E402
from aunet.training.trainer import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BIG = ["model.dimensions=[512,1024,2048]", "model.layers=[2,2,4]", "model.head_dims=[64,128,128]", "model.max_seqlens=[-1,-1,-1]"]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(out_dir: Path, plain: bool) -> None:
    init_distributed()
    rank = dist.get_rank()
    cfg, _ = load_config(REPO / "configs" / "tiny_aunet3.yaml", BIG)
    ds_config = deepspeed_config(cfg, on_gpu=False)
    before = peak_rss_bytes()
    model = build_model(cfg, ds_config)
    grown = peak_rss_bytes() - before
    params = dict(model.named_parameters())
    digest = hashlib.sha256()
    for name in sorted(params):
        with deepspeed.zero.GatheredParameters([params[name]]):
            if rank == 0:
                digest.update(name.encode() + params[name].detach().float().numpy().tobytes())
    report = {
        "partition_elements": sum(p.ds_tensor.numel() for p in params.values()),
        "model_elements": sum(p.ds_numel for p in params.values()),
        "rss_growth_bytes": grown,
        "persistent": sorted(n for n, p in params.items() if getattr(p, "ds_persist", False)),
        "threshold": ds_config["zero_optimization"]["stage3_param_persistence_threshold"],
        "sizes": {n: p.ds_numel for n, p in params.items()},
        "digest": digest.hexdigest() if rank == 0 else None,
    }
    if plain and rank == 0:
        # The same seed without ZeRO: the weights a single process builds.
        from aunet.model import HierarchicalTransformer

        torch.manual_seed(cfg.model.seed)
        reference = dict(HierarchicalTransformer(cfg.model).named_parameters())
        ref = hashlib.sha256()
        for name in sorted(reference):
            ref.update(name.encode() + reference[name].detach().float().numpy().tobytes())
        report["plain_digest"] = ref.hexdigest()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plain", action="store_true", help="rank 0 also builds the model without ZeRO")
    p.add_argument("--local_rank", type=int, default=-1)
    a = p.parse_args()
    main(a.out, a.plain)
