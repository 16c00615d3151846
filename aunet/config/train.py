"""Training configuration: one dataclass per concern, composed into `TrainArgs`.

The sections and keys are the reference's (lingua's `TrainArgs` and its apps/aunet data
arguments), so its published configs load unchanged; keys we do not use are reported by the
loader, not rejected. Checks that span sections live in `TrainArgs.__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aunet.config.errors import ConfigError, require
from aunet.config.model import ModelArgs
from aunet.segment.segmenter import Segmenter

FSDP_TO_ZERO = {"full_shard": 3, "shard_grad_op": 2, "no_shard": 0}
MODEL_DTYPES = ("bf16", "fp16", "fp32")
#: torch.compile backends the trainer offers (`distributed.compile_backend`).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
#: The strategy of `data.regex` when a config gives none: one stage, words.
DEFAULT_STRATEGY = {"word1": "1@1"}


@dataclass
class TokenizerArgs:
    """What ids the model reads; used by the loader, validation and `aunet eval`."""

    name: str = "bytes"
    """``bytes``: AU-Net reads bytes (ids 0-255, BOS 256, EOS 257). ``bpe``: a byte-level BPE
    file made by `aunet.baselines.bpe.train_bpe` (the BPE baseline of benches/compare.py; flat models only)."""
    path: str | None = None
    """Tokenizer file, for ``bpe`` (the BPE baseline's tokenizer file)."""

    @property
    def bpe_file(self) -> str | None:
        """The BPE tokenizer file for ``bpe``; None for bytes."""
        return self.path if self.name == "bpe" else None

    def __post_init__(self) -> None:
        require(self.name in ("bytes", "bpe"), "name", f"must be 'bytes' or 'bpe', got {self.name!r}")
        require(self.name != "bpe" or bool(self.path), "path", "the bpe tokenizer needs its file (data.tokenizer.path)")


@dataclass
class RegexArgs:
    """How bytes are grouped into the deeper stages' positions."""

    strategy: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_STRATEGY))
    """Segmentation strategies, one per pooling level, in order: key = kind prefix
    (``word``, ``pretok``, ``punct``), value = its parameter (SPEC section 2). Read by the
    trainer's segmentation of raw-text sources, the check of shards against the model, `aunet
    eval` on raw text, generation (prompt levels and the causal stream) and `aunet lm-eval`."""

    def __post_init__(self) -> None:
        require(len(self.strategy) >= 1, "strategy", "needs at least one strategy")
        try:  # the compiled core validates kinds and parameters
            Segmenter(self.strategy)
        except (ValueError, TypeError) as e:
            raise ConfigError("strategy", str(e)) from None


@dataclass
class DataArgs:
    """The training data loader (`aunet.data`) and the document framing shared by validation and
    `aunet eval`."""

    root_dir: str | None = None
    """Directory holding one sub-directory per source: `sources` and `eval.validation.sources`
    are under it."""
    sources: dict[str, float] = field(default_factory=dict)
    """Source sub-directory -> sampling weight (mixed per packed window). A source is an
    `aunet-segment` shard directory, or raw-text files (JSONL, .gz, .zst, Parquet, Arrow, or a
    folder of them) that the trainer segments at start-up into <dump_dir>/segmented/."""
    batch_size: int = 2
    """Sequences per rank and micro-step (also DeepSpeed's micro-batch size and validation's
    batch)."""
    seq_len: int = 2048
    """Bytes per sequence (windows of seq_len + 1 are packed: inputs and shifted targets). Read
    by the loader, validation and the FLOP estimate; `aunet lm-eval`'s default `max_length`."""
    n_views: int = 2
    """Shifted views per window: 2 = inputs and next-byte targets, the only value AU-Net trains
    with (the reference's published configs all say 2; more views would add multi-byte-ahead
    targets, which no AU-Net objective uses). Checked, so a config asking for more fails."""
    seed: int = 42
    """Seed of the shuffle buffer and of source sampling."""
    add_bos: bool = True
    """Prefix every document with BOS (256), in training, validation and `aunet eval`."""
    add_eos: bool = True
    """Append EOS (257) to every document, in training, validation and `aunet eval`."""
    load_async: bool = True
    """Prepare batches on a background thread."""
    prefetch_size: int = 64
    """Batches the background worker (`load_async`) prepares ahead of the training loop. Not
    the shuffle buffer: that is `shuffle_buffer`."""
    shuffle_buffer: int = 1024
    """Documents held in each source's shuffle buffer (seeded; 1 = documents in shard order
    within each rank's share)."""
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    """The tokenizer: bytes for AU-Net, BPE for the BPE baseline."""
    regex: RegexArgs | None = field(default_factory=RegexArgs)
    """Segmentation strategies that produce the level masks; null for a flat model (L = 0)."""
    allow_shard_mismatch: bool = False
    """Train on shard directories whose strategy list (compared in order) or depth differs from
    `regex.strategy` and the model's pooling levels. Off: such a run stops with an error naming
    both; on: it goes on and reports each difference."""
    verify_shards: bool = False
    """Check each shard's checksum (XXH3-128; SHA-256 in directories written before it) against
    its manifest when the loader or validation first opens it (every shard a rank reads, once
    per run: XXH3-128 reads about 9 GB/s per core from the page cache, about 0.1 s per GB per
    rank, plus the disk read). Off, opening a shard still checks its size, and mapping a record
    batch checks its rows, text/mask lengths and level range (cheap)."""

    @property
    def shard_strategy(self) -> dict[str, str | None]:
        """The strategy raw text is segmented with for this config: `regex.strategy`, or for a
        flat model (`regex: null`, whose forward ignores levels) the default, since shards
        always carry a mask."""
        return dict(self.regex.strategy) if self.regex is not None else dict(DEFAULT_STRATEGY)

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "prefetch_size", "shuffle_buffer"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.n_views == 2, "n_views", f"only 2 (inputs and next-byte targets) is supported, got {self.n_views}")
        for source, weight in self.sources.items():
            require(weight >= 0, f"sources.{source}", f"weight must be >= 0, got {weight}")
        require(not self.sources or sum(self.sources.values()) > 0, "sources", "weights sum to 0")


@dataclass
class OptimArgs:
    """The optimizer: DeepSpeed running torch's AdamW, and the learning-rate schedule
    (`aunet/training/lr_schedule.py`)."""

    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay."""
    epsilon: float = 1e-8
    """AdamW's epsilon (added to the denominator)."""
    beta1: float = 0.9
    """AdamW's first-moment decay."""
    beta2: float = 0.95
    """AdamW's second-moment decay."""
    clip: float = 1.0
    """Gradient clipping by global norm (DeepSpeed's); 0 disables it."""
    scheduler: str = "cosine"
    """Learning-rate schedule after warmup: ``cosine`` (to lr * lr_min_ratio at `steps`),
    ``linear`` (likewise) or ``constant``."""
    warmup: int = 2000
    """Linear warmup steps."""
    lr_min_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
    max_bad_steps: int = 10
    """The run stops (rc != 0, no checkpoint written, nothing pruned) once this many consecutive
    optimizer steps had a non-finite loss or gradient norm. DeepSpeed skips the update of such
    a step, so a few are harmless (fp16's loss scaler overflows at the start); weights gone NaN
    make every step bad. Detected on the device, read at the next logging or checkpoint step."""

    def __post_init__(self) -> None:
        require(self.max_bad_steps >= 1, "max_bad_steps", f"must be >= 1, got {self.max_bad_steps}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, name, f"must be in [0, 1), got {getattr(self, name)}")
        require(self.clip >= 0, "clip", f"must be >= 0, got {self.clip}")
        require(self.scheduler in ("cosine", "linear", "constant"), "scheduler",
                f"{self.scheduler!r} is not one of cosine, linear, constant")
        require(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        require(0 <= self.lr_min_ratio <= 1, "lr_min_ratio", f"must be in [0, 1], got {self.lr_min_ratio}")


@dataclass
class DistributedArgs:
    """How the trainer spreads the model over ranks (DeepSpeed's ZeRO config) and compiles it."""

    fsdp_type: str = "full_shard"
    """Sharding, in the reference's FSDP words: ``full_shard`` = DeepSpeed ZeRO-3 (the default:
    parameters, gradients and optimizer state partitioned, the model built partitioned),
    ``shard_grad_op`` = ZeRO-2 (every rank holds the whole model; gradients and optimizer state
    partitioned: no parameter all-gathers in the forward and backward, which a model that fits
    one GPU, e.g. on a single node, does not need), ``no_shard`` = plain data parallel (ZeRO-0)."""
    zero_stage: int | None = None
    """Explicit DeepSpeed ZeRO stage (0-3); overrides fsdp_type when set."""
    compile: bool = False
    """torch.compile the model, one transformer block at a time (static shapes, one graph per
    block; under ZeRO-3 blocks are DeepSpeed leaf modules, gathered whole before they run)."""
    compile_backend: str = "inductor"
    """The torch.compile backend: ``inductor`` (fused kernels), or ``aot_eager`` / ``eager`` to
    tell a compiler problem from a model problem."""
    model_dtype: str = "bf16"
    """Training precision on GPUs (``bf16``, ``fp16``, ``fp32``: DeepSpeed's bf16 / fp16
    sections); CPUs always train in fp32."""
    matmul_allow_tf32: bool = False
    """Let fp32 matrix products on NVIDIA GPUs use TF32 tensor cores (sets
    `torch.backends.cuda.matmul.allow_tf32` and cuDNN's in the trainer); no effect on CPUs or in
    bf16 training, whose products are bf16 already."""
    selective_activation_checkpointing: bool = False
    """Selective activation checkpointing of every block: the backward pass recomputes the
    elementwise work (norms, RoPE, SiLU, gating, residual adds) and reuses the saved outputs of
    the matrix products and attention kernels (less memory, little extra compute). The library
    also offers full recomputation of whole blocks (`set_activation_checkpointing("full")`); the
    config has only this switch, as the reference's."""
    tp_size: int = 1
    """Tensor parallelism is not supported: must be 1."""
    compile_cache_size_limit: int = 8
    """`torch._dynamo.config.cache_size_limit` when `compile` is on: how many compiled versions
    of the block function dynamo keeps before it falls back to eager. Raised when needed to
    twice `aunet.model.compile.compile_shapes` (every stage-length bucket, in training and in
    validation), so that no bucket runs uncompiled."""
    zero_reduce_bucket_size: int | None = None
    """ZeRO gradient reduce(-scatter) bucket (elements). Default: one transformer block of the
    widest stage, or the largest parameter if larger, within [2^22, 5e8]
    (`aunet.training.ds_config.default_bucket`, which gives the reasons): tens of millions of
    elements from 1B parameters up (51M for AU-Net-2 "1B"), so that each collective is large
    enough for inter-node links and one block's reduction still overlaps the next block's
    backward pass; the floor keeps small models from paying one collective per tiny bucket."""
    zero_prefetch_bucket_size: int | None = None
    """ZeRO-3 parameters all-gathered ahead of use (elements). Default: the same block-sized
    bucket, so the next block's matrices (more than one trunk FFN matrix) are all in flight
    while the current block computes."""
    fp32_grad_reduce: bool = False
    """Reduce gradients across ranks in fp32 (DeepSpeed's ``communication_data_type: fp32``), as
    the reference does (FSDP's ``reduce_dtype=float32``). Off: they are reduced in the training
    dtype (bf16 on GPUs), half the bytes on the interconnect, with bf16's 8-bit mantissa in the
    sum; turn it on when many ranks' bf16 sums lose too much precision. No effect on CPUs,
    which train in fp32."""
    segment_timeout_minutes: float = 1440.0
    """How long ranks wait for each other while raw-text sources are segmented at launch. They
    wait on a gloo process group of their own with this timeout, not on the training group,
    whose NCCL watchdog would end the run after its 30 minutes (default: 24 hours)."""
    zero_param_persistence_threshold: int | None = None
    """ZeRO-3 keeps parameters with fewer elements than this whole on every rank instead of
    gathering them in each forward and backward (norm weights, small embeddings). Default:
    10 x hidden, which keeps every norm weight resident and partitions every matrix; 0 gathers
    everything (each RMSNorm weight becomes a collective per use)."""
    zero_max_live_parameters: int | None = None
    """ZeRO-3 upper bound on gathered parameters held at once (elements); None: DeepSpeed's
    default (1e9)."""

    def __post_init__(self) -> None:
        for name in ("zero_reduce_bucket_size", "zero_prefetch_bucket_size", "zero_param_persistence_threshold",
                     "zero_max_live_parameters"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, int) and value >= 0), name, f"must be a whole number >= 0 or null, got {value!r}")
        require(self.fsdp_type in FSDP_TO_ZERO, "fsdp_type",
                f"{self.fsdp_type!r} is not one of {', '.join(FSDP_TO_ZERO)}")
        require(self.zero_stage is None or 0 <= self.zero_stage <= 3, "zero_stage",
                f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        require(self.model_dtype in MODEL_DTYPES, "model_dtype",
                f"{self.model_dtype!r} is not one of {', '.join(MODEL_DTYPES)}")
        require(self.tp_size == 1, "tp_size", f"tensor parallelism is not supported, got {self.tp_size}")
        require(self.segment_timeout_minutes > 0, "segment_timeout_minutes",
                f"must be > 0, got {self.segment_timeout_minutes}")
        require(self.compile_cache_size_limit >= 1, "compile_cache_size_limit",
                f"must be >= 1, got {self.compile_cache_size_limit}")
        require(self.compile_backend in COMPILE_BACKENDS, "compile_backend",
                f"{self.compile_backend!r} is not one of {', '.join(COMPILE_BACKENDS)}")

    @property
    def zero(self) -> int:
        """The DeepSpeed ZeRO stage to run."""
        return FSDP_TO_ZERO[self.fsdp_type] if self.zero_stage is None else self.zero_stage


@dataclass
class SaveEvery:
    """Cadence and pruning of training checkpoints."""

    every: int = 1000
    """Steps between saves."""
    keep: int = 0
    """Saves kept; 0 keeps all. Only checkpoints that passed their check count, so pruning never
    goes below the newest good one."""

    def __post_init__(self) -> None:
        require(self.every >= 1, "every", f"must be >= 1, got {self.every}")
        require(self.keep >= 0, "keep", f"must be >= 0, got {self.keep}")


@dataclass
class EvalEvery:
    """Cadence of validation (held-out bpb, `eval.validation`)."""

    every: int = 1000
    """Steps between validations."""

    def __post_init__(self) -> None:
        require(self.every >= 1, "every", f"must be >= 1, got {self.every}")


@dataclass
class CheckpointArgs:
    """Where checkpoints go, how often, and what a new run starts from."""

    dump: SaveEvery = field(default_factory=SaveEvery)
    """Training checkpoints (model, optimizer, data-loader states)."""
    eval: EvalEvery = field(default_factory=EvalEvery)
    """Evaluation points (validation bpb). The reference's `eval.keep` (how many evaluation
    dumps to keep) has no counterpart here, since validation writes only metrics.jsonl lines:
    it is reported as unused."""
    path: str | None = None
    """Checkpoint directory (the trainer saves and resumes there; `aunet export --checkpoints`
    reads it); None means <dump_dir>/checkpoints."""
    init_ckpt_path: str | None = None
    """Weights to start a new run from: an `aunet export` directory (or its model.safetensors),
    a checkpoint directory (its newest complete step_N/) or one step_N/ directory. Weights only:
    optimizer, schedule step and data start fresh; ignored (and logged) once the run has a
    checkpoint of its own to resume from. The model section (except its init settings), the
    segmentation strategy and the tokenizer must match the run's, else the run stops naming the
    path and the differing keys. Checkpoint directories are DeepSpeed pickles: only point this at
    checkpoints you trust."""


WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class WandbArgs:
    """Weights & Biases (the `track` extra). The keys are a subset of the reference's
    `logging.wandb`; its others are reported as unused."""

    project: str | None = None
    """W&B project (None: W&B's default, or the WANDB_PROJECT variable)."""
    entity: str | None = None
    """W&B team or user (None: the logged-in user's default)."""
    name: str | None = None
    """The run's display name (None: the run's `name`)."""
    group: str | None = None
    """Runs grouped together in the W&B interface."""
    tags: list[str] = field(default_factory=list)
    """Tags of the run."""
    notes: str | None = None
    """A description of the run."""
    mode: str | None = None
    """`online`, `offline` (no network: files under dump_dir/wandb, `wandb sync` later) or
    `disabled`; None: the WANDB_MODE variable, else online."""
    id: str | None = None
    """The W&B run id (None: one derived from dump_dir; `wandb.init` runs with
    `resume="allow"`, so that a resumed run continues the same run and curves)."""

    def __post_init__(self) -> None:
        require(self.mode is None or self.mode in WANDB_MODES, "mode", f"must be one of {', '.join(WANDB_MODES)}, got {self.mode!r}")


@dataclass
class LoggingArgs:
    """Metrics the trainer logs on rank 0: console, <dump_dir>/metrics.jsonl, and optionally
    TensorBoard and Weights & Biases."""

    freq: int = 10
    """Steps between metric logs (console and metrics.jsonl)."""
    tensorboard: bool = False
    """Also write every metrics.jsonl scalar as TensorBoard events under dump_dir/tensorboard/
    (rank 0, at logging steps; the `track` extra)."""
    wandb: WandbArgs | None = None
    """Also log every metrics.jsonl scalar and the run's config to Weights & Biases (rank 0, at
    logging steps; the `track` extra). None: off."""

    def __post_init__(self) -> None:
        require(self.freq >= 1, "freq", f"must be >= 1, got {self.freq}")


@dataclass
class ValidationArgs:
    """Held-out bpb during training (every `checkpoint.eval.every` steps, on all ranks)."""

    max_steps: int | None = None
    """Validation batches per rank and evaluation; None means the whole held-out set."""
    sources: dict[str, float] = field(default_factory=dict)
    """Held-out shard directories (under data.root_dir, like data.sources) -> weight; their bpb
    is logged as val_bpb every checkpoint.eval.every steps. Empty: no validation."""

    def __post_init__(self) -> None:
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        for source, weight in self.sources.items():
            require(weight > 0, f"sources.{source}", f"weight must be > 0, got {weight}")


@dataclass
class GeneratorArgs:
    """Inference settings stored with the model (they travel into exports)."""

    max_tokens: int = 16384
    """Longest prompt + generation of `aunet generate`, in bytes: a longer prompt keeps its last
    `max_tokens - max_bytes` bytes (the cache is sized for this many bytes)."""
    dtype: str = "bf16"
    """Precision of inference on GPUs (`aunet generate`, `aunet eval`, `aunet lm-eval`) unless
    told otherwise (`--dtype`, the `dtype` model argument); CPUs use fp32 by default."""

    def __post_init__(self) -> None:
        require(self.max_tokens >= 1, "max_tokens", f"must be >= 1, got {self.max_tokens}")
        require(self.dtype in MODEL_DTYPES, "dtype", f"{self.dtype!r} is not one of {', '.join(MODEL_DTYPES)}")


@dataclass
class EvalArgs:
    """Evaluation during training and inference settings."""

    validation: ValidationArgs = field(default_factory=ValidationArgs)
    """Held-out data evaluated during training."""
    generator: GeneratorArgs = field(default_factory=GeneratorArgs)
    """Generation and inference settings."""


@dataclass
class TrainArgs:
    """A whole training run: the sections below, composed."""

    name: str = "aunet"
    """Run name: the default dump_dir is runs/<name>; recorded in checkpoints."""
    dump_dir: str = ""
    """Output directory (config.yaml, metrics.jsonl, checkpoints, segmented raw-text sources);
    empty means runs/<name>."""
    seed: int = 42
    """Torch seed of everything but the weight init (model.seed) and the data (data.seed), set
    per rank and resume step."""
    grad_acc_steps: int = 1
    """Micro-batches per optimizer step (the trainer's loop and DeepSpeed's config)."""
    gc_collect_freq: int = 1000
    """Steps between garbage collections: the trainer turns Python's automatic collector off
    and collects every this many steps on every rank at once, so no rank stalls a collective
    with a collection of its own at a random step."""
    steps: int = 1000
    """Optimizer steps: the run's last step, and the end of the learning-rate schedule."""
    data: DataArgs = field(default_factory=DataArgs)
    """Training data and its framing."""
    optim: OptimArgs = field(default_factory=OptimArgs)
    """Optimizer and learning-rate schedule."""
    model: ModelArgs = field(default_factory=ModelArgs)
    """The architecture."""
    distributed: DistributedArgs = field(default_factory=DistributedArgs)
    """Sharding, precision and compilation."""
    checkpoint: CheckpointArgs = field(default_factory=CheckpointArgs)
    """Checkpoints and validation cadence."""
    logging: LoggingArgs = field(default_factory=LoggingArgs)
    """Metrics and experiment tracking."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Validation and inference settings."""

    def __post_init__(self) -> None:
        for name in ("grad_acc_steps", "gc_collect_freq", "steps"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        levels = self.model.n_levels
        strategies = len(self.data.regex.strategy) if self.data.regex is not None else 0
        require(strategies == levels, "data.regex.strategy",
                f"has {strategies} strategies but the model has {levels} pooling levels "
                f"(len(model.dimensions) - 1); they must match")
        first = self.model.max_seqlens[0]
        require(first == -1 or first >= self.data.seq_len, "model.max_seqlens",
                f"max_seqlens[0] = {first} is shorter than data.seq_len = {self.data.seq_len}")
        if self.data.tokenizer.name == "bpe":
            require(levels == 0, "data.tokenizer.name",
                    f"bpe feeds a flat transformer (model.dimensions with one stage), not {levels} pooling levels")
        if self.data.tokenizer.name == "bytes":
            require(self.model.vocab_size == 258, "model.vocab_size",
                    f"the bytes tokenizer has 258 ids, got {self.model.vocab_size}")
