"""Choose DeepSpeed's accelerator before DeepSpeed is imported.

The registry's PyTorch wheel is a CUDA build even on machines without a GPU; DeepSpeed then has
to be told to use its CPU accelerator (gloo collectives), or it tries CUDA kernels. Every entry
point that imports DeepSpeed calls :func:`ensure_ds_accelerator` first, and starts the process group
with :func:`init_distributed`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def ensure_ds_accelerator() -> str:
    """Set ``DS_ACCELERATOR`` to ``cpu`` when no GPU is visible, unless the user chose one.

    Also puts this interpreter's script folder on ``PATH``: DeepSpeed compiles its CPU
    shared-memory collective just in time and looks for ``ninja`` there, which a virtual
    environment that was not activated would otherwise hide.

    The compiled op goes to ``<environment>/torch_extensions`` unless ``TORCH_EXTENSIONS_DIR``
    says otherwise: the default, one folder per user under ~/.cache, is shared by every checkout,
    and two environments then rebuild it over each other (minutes per launch on a small CPU).

    Returns the accelerator name in force.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    if not os.environ.get("DS_ACCELERATOR"):
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    return os.environ["DS_ACCELERATOR"]


# Opt back in to DeepSpeed's CPU shared-memory collective (see init_distributed).
SHM_COMM_ENV = "AUNET_DS_SHM_COMM"


def init_distributed() -> None:
    """``deepspeed.init_distributed()``, without DeepSpeed's CPU shared-memory collective.

    On the CPU accelerator DeepSpeed JIT-compiles ``deepspeed_shm_comm`` at start-up and each
    rank maps two 69 MB buffers in ``/dev/shm`` that it never unlinks. The op only serves
    ``inference_all_reduce`` (tensor-parallel inference), which training and evaluation here never
    call; ZeRO-3 collectives go through gloo either way. Every launch leaked 138 MB of RAM-backed
    tmpfs: a few hundred test runs filled a 24 GiB machine's /dev/shm and starved later jobs.
    Marking the op incompatible is the switch DeepSpeed itself consults before building it.
    ``AUNET_DS_SHM_COMM=1`` keeps DeepSpeed's default.
    """
    import deepspeed
    import deepspeed.ops

    if os.environ.get("DS_ACCELERATOR") == "cpu" and os.environ.get(SHM_COMM_ENV) != "1":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed()
