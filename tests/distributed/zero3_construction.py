"""Build AU-Nets with the trainer's own `build_model`; run by the DeepSpeed launcher (see
test_cluster_training.py) with 1 or 2 ranks.

Each rank writes OUT_DIR/rank{R}.json. With --big: for a ~300M-parameter model, the elements of
its partitions and of the model, the growth of its peak RSS during construction, and which small
parameters ZeRO-3 keeps whole (the memory claim needs the size; it is built once, by the 2-rank
run). Always, for configs/tiny_aunet3.yaml: its elements, its partitions' and (rank 0) a digest
of its full weights gathered parameter by parameter; with --plain rank 0 also digests the weights
the same seed gives without ZeRO. Whether weights depend on the ranks does not depend on the
size, so the tiny model answers it.
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


def digest_of(params: dict, gather: bool) -> str:
    digest = hashlib.sha256()
    for name in sorted(params):
        if gather:
            with deepspeed.zero.GatheredParameters([params[name]]):
                digest.update(name.encode() + params[name].detach().float().numpy().tobytes())
        else:
            digest.update(name.encode() + params[name].detach().float().numpy().tobytes())
    return digest.hexdigest()


def main(out_dir: Path, plain: bool, big: bool) -> None:
    init_distributed()
    rank = dist.get_rank()
    report = {}
    if big:  # first: the peak RSS only ever grows
        cfg, _ = load_config(REPO / "configs" / "tiny_aunet3.yaml", BIG)
        ds_config = deepspeed_config(cfg, on_gpu=False)
        before = peak_rss_bytes()
        model = build_model(cfg, ds_config)
        grown = peak_rss_bytes() - before
        params = dict(model.named_parameters())
        report["big"] = {
            "partition_elements": sum(p.ds_tensor.numel() for p in params.values()),
            "model_elements": sum(p.ds_numel for p in params.values()),
            "rss_growth_bytes": grown,
            "persistent": sorted(n for n, p in params.items() if getattr(p, "ds_persist", False)),
            "threshold": ds_config["zero_optimization"]["stage3_param_persistence_threshold"],
            "sizes": {n: p.ds_numel for n, p in params.items()},
        }
        del model, params
    cfg, _ = load_config(REPO / "configs" / "tiny_aunet3.yaml")
    params = dict(build_model(cfg, deepspeed_config(cfg, on_gpu=False)).named_parameters())
    gathered = digest_of(params, gather=True)  # every rank takes part in the gathers
    report.update({
        "partition_elements": sum(p.ds_tensor.numel() for p in params.values()),
        "model_elements": sum(p.ds_numel for p in params.values()),
        "partitioned": sum(not getattr(p, "ds_persist", False) for p in params.values()),
        "digest": gathered if rank == 0 else None,
    })
    if plain and rank == 0:
        # The same seed without ZeRO: the weights a single process builds.
        from aunet.model import HierarchicalTransformer

        torch.manual_seed(cfg.model.seed)
        report["plain_digest"] = digest_of(dict(HierarchicalTransformer(cfg.model).named_parameters()), gather=False)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plain", action="store_true", help="rank 0 also builds the tiny model without ZeRO")
    p.add_argument("--big", action="store_true", help="first build the ~300M model and measure it")
    p.add_argument("--local_rank", type=int, default=-1)
    a = p.parse_args()
    main(a.out, a.plain, a.big)
