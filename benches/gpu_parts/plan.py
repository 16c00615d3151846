"""The sizes of the GPU acceptance run and of its CPU smoke run, and what every part is handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BENCHES = Path(__file__).resolve().parents[1]
REPO = BENCHES.parent

#: The paper's AU-Net-2 "1B" training speed per H100.
PAPER_BYTES_PER_S = 225e3


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode (a GPU run, or the CPU smoke run)."""

    smoke: bool
    train_config: str
    train_model: dict
    """Overrides of the base config's `model` section (empty: the config's own model)."""
    train_batch: int
    train_seq_len: int
    steps: int
    resume_steps: int
    log_freq: int
    compile_training: bool
    """After the eager run and its resume, a fresh run of `compiled_steps` steps with
    `distributed.compile` (per block) and `compile_backend`; if it runs out of time, the eager
    figures stand."""
    compiled_steps: int
    compile_backend: str
    corpus_mb: float
    eval_batches: int
    gen_prompt_bytes: int
    gen_pushed_bytes: int
    gen_rate_bytes: int
    """Bytes per prompt for the sampling speed at batch 1 and 32."""
    throughput_config: str
    throughput_seq_len: int | None
    """Bytes per sequence (None: the config's)."""
    batches: tuple[int, ...]
    """Batch sizes tried, ascending; the largest that runs two steps is timed."""
    warmup_steps: int
    timed_steps: int
    compile_throughput: bool
    flat_head: int
    flat_multiple_of: int
    flat_widths: tuple[int, ...]
    bpe_vocab: int
    bytes_per_token: float
    budgets: dict = field(default_factory=dict)
    """Seconds per part."""


GPU = Plan(
    smoke=False, train_config="configs/aunet3_1b.yaml",
    # 98.6M parameters (tests/test_gpu_check.py): the 1B config's layout and byte stage, with
    # stages 1 and 2 at 512 and 768 wide and 4 and 8 blocks deep.
    train_model={"dimensions": [256, 512, 768], "layers": [3, 4, 8], "head_dims": [64, 128, 128]},
    train_batch=8, train_seq_len=8192, steps=30, resume_steps=40, log_freq=10, compile_training=True,
    compiled_steps=30, compile_backend="inductor",
    corpus_mb=8.0, eval_batches=2, gen_prompt_bytes=400, gen_pushed_bytes=800, gen_rate_bytes=256,
    throughput_config="configs/aunet2_1b.yaml", throughput_seq_len=None, batches=(8, 12, 16, 24, 32, 48), warmup_steps=2, timed_steps=5,
    compile_throughput=True, flat_head=128, flat_multiple_of=256, flat_widths=tuple(range(512, 4097, 128)),
    # A LLaMA-3-sized BPE vocabulary at ~4.5 bytes per token (English web text).
    bpe_vocab=128256, bytes_per_token=4.5,
    # 465 s in all, so that the run stays under 8 minutes whatever happens (the H200 run of
    # 2026-12-04: an eager launch of 20 steps took about 60 s, the compiled one did not reach
    # step 10 in 154 s when whole-model compilation broke at every layer under ZeRO-3).
    budgets={"setup": 40, "environment": 10, "train": 220, "generation": 50,
             "throughput_aunet2": 55, "throughput_bytes": 45, "throughput_bpe": 45},
)

SMOKE = Plan(
    smoke=True, train_config="configs/tiny_aunet3.yaml", train_model={}, train_batch=4, train_seq_len=256,
    steps=4, resume_steps=6, log_freq=2, compile_training=True, compiled_steps=4,
    # dynamo's capture, per block, without a C++ compiler's minutes on a 2-core machine.
    compile_backend="eager", corpus_mb=0.3, eval_batches=1,
    gen_prompt_bytes=60, gen_pushed_bytes=150, gen_rate_bytes=8, throughput_config="configs/tiny_aunet2.yaml", throughput_seq_len=128,
    batches=(1, 2),
    warmup_steps=1, timed_steps=2, compile_throughput=False, flat_head=16, flat_multiple_of=16,
    flat_widths=tuple(range(32, 257, 16)), bpe_vocab=1024, bytes_per_token=3.0,
    # Generous: a shared 2-core machine under load runs these several times slower.
    budgets={"setup": 60, "environment": 15, "train": 400, "generation": 60,
             "throughput_aunet2": 60, "throughput_bytes": 60, "throughput_bpe": 60},
)


@dataclass
class Context:
    plan: Plan
    workdir: Path
    wheelhouse: Path
    device: object = None
    env: dict = field(default_factory=dict)
