"""Model configuration: the reference's `model:` section (SPEC section 4), typed and checked.

Field names and meanings follow the reference (facebookresearch/lingua, apps/aunet) so that its
published YAML files load unchanged. The defaults are the paper's AU-Net-2 ("2B_1level").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from aunet.config.errors import require

#: 256 bytes, then BOS (256) and EOS (257) (SPEC section 1).
BYTE_VOCAB = 258
BOS_ID = 256
EOS_ID = 257

#: Offsets inside a segment are taken modulo this many upsampling slots (`o(j) mod 16`).
MAX_OFFSET = 16

INIT_STD_FACTORS = ("disabled", "current_depth", "global_depth", "dim_ratio")
POOLING_OPTIONS = ("repeat", "indexed_matmul", "non_param")


@dataclass(frozen=True)
class Pooling:
    """A parsed `pooling_type`: ``simple`` followed by any of the options, joined by ``_``.

    The reference reads the name by substring (``"repeat" in name`` ...); we accept exactly
    ``simple`` plus each option at most once, in any order, and reject anything else. What a
    type does lives in its class (`aunet.model.pooling`), registered under `name`.
    """

    options: frozenset[str]

    @property
    def name(self) -> str:
        """The canonical spelling: options in the order non_param, repeat, indexed_matmul, and
        repeat left out next to indexed_matmul (which repeats already)."""
        kept = self.options - {"repeat"} if "indexed_matmul" in self.options else self.options
        return "_".join(["simple", *(o for o in ("non_param", "repeat", "indexed_matmul") if o in kept)])

    @property
    def non_param(self) -> bool:
        """Down/up by feature interleaving and averaging (the widths must then be multiples)."""
        return "non_param" in self.options

    @classmethod
    def parse(cls, name: str) -> Pooling:
        require(isinstance(name, str) and name.startswith("simple"), "pooling_type",
                f"{name!r} is not a pooling type: it must start with 'simple'")
        rest, seen = name[len("simple"):], []
        while rest:
            require(rest.startswith("_"), "pooling_type", f"cannot read {name!r}")
            rest = rest[1:]
            option = next((o for o in POOLING_OPTIONS if rest == o or rest.startswith(o + "_")), None)
            require(option is not None and option not in seen, "pooling_type",
                    f"cannot read {name!r}: after 'simple' come the options {', '.join(POOLING_OPTIONS)}, "
                    "each at most once, joined by '_'")
            seen.append(option)
            rest = rest[len(option):]
        return cls(frozenset(seen))


@dataclass
class BlockArgs:
    """Settings shared by every transformer block of every stage (the reference's `model.block`);
    the init settings are those of the weight initialisation."""

    rope_theta: float = 500000.0
    """RoPE base frequency (the published AU-Net configs use 500000; lingua's default is 10000)."""
    multiple_of: int = 256
    """The SwiGLU hidden size (8/3 * dim, times ffn_dim_multiplier) is rounded up to this."""
    ffn_dim_multiplier: float | None = None
    """Optional factor on the SwiGLU hidden size before rounding."""
    n_kv_heads: int | None = None
    """Key/value heads per stage (grouped-query attention); None means as many as query heads.
    Must divide the number of heads of every stage."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon inside the blocks and the pooling transitions."""
    init_base_std: float | None = None
    """Fixed init std for block projections; None means fan-in**-0.5 (the reference default)."""
    init_std_factor: str = "disabled"
    """Divides the std of the output projections (wo, w2) per layer: ``disabled`` (1, the
    reference default), ``current_depth`` (sqrt(2 * (layer + 1))), ``global_depth``
    (sqrt(2 * (n_layers + 1))) or ``dim_ratio`` (dim / 4096)."""

    def __post_init__(self) -> None:
        require(self.rope_theta > 0, "rope_theta", f"must be > 0, got {self.rope_theta}")
        require(self.multiple_of >= 1, "multiple_of", f"must be >= 1, got {self.multiple_of}")
        require(self.ffn_dim_multiplier is None or self.ffn_dim_multiplier > 0, "ffn_dim_multiplier",
                f"must be > 0, got {self.ffn_dim_multiplier}")
        require(self.n_kv_heads is None or self.n_kv_heads >= 1, "n_kv_heads", f"must be >= 1, got {self.n_kv_heads}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        require(self.init_base_std is None or self.init_base_std > 0, "init_base_std",
                f"must be > 0, got {self.init_base_std}")
        require(self.init_std_factor in INIT_STD_FACTORS, "init_std_factor",
                f"{self.init_std_factor!r} is not one of {', '.join(INIT_STD_FACTORS)}")

    def ffn_hidden(self, dim: int) -> int:
        """SwiGLU hidden size of a block of width `dim`, computed as the reference does."""
        hidden = int(2 * 4 * dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def init_factor(self, layer: int, n_layers: int, dim: int) -> float:
        """Divisor of the output-projection init std of block `layer` of a stack of `n_layers`."""
        return {
            "disabled": 1.0,
            "current_depth": (2 * (layer + 1)) ** 0.5,
            "global_depth": (2 * (n_layers + 1)) ** 0.5,
            "dim_ratio": dim / 4096,
        }[self.init_std_factor]


@dataclass
class ModelArgs:
    """The AU-Net architecture. Stage i has width ``dimensions[i]``; there are
    L = len(dimensions) - 1 pooling transitions (L = 0 is a flat byte-level transformer)."""

    dimensions: list[int] = field(default_factory=lambda: [512, 2048])
    """Width of each stage, byte level first (SPEC section 4; the per-stage lists below have one
    entry per stage, and the FLOP estimate reads them all)."""
    layers: list[int] = field(default_factory=lambda: [3, 25])
    """layers[i] is the depth of encoder i and of decoder i (i < L); layers[L] the trunk depth."""
    head_dims: list[int] = field(default_factory=lambda: [64, 128])
    """Attention head size of each stage; must divide the stage width and be even (RoPE)."""
    sliding_windows: list[int] | None = field(default_factory=lambda: [512, 4096])
    """Causal attention window of each stage, in that stage's positions (a query sees itself and
    the window - 1 positions before it); -1 or None means no window."""
    max_seqlens: list[int] | None = field(default_factory=lambda: [-1, 3200])
    """max_seqlens[0]: longest byte input (-1: any). max_seqlens[i+1]: stage i+1 keeps only the
    first that many pooled positions and is padded to that length, so shapes are static;
    -1 means no limit (the stage is then as long as the stage before it)."""
    residuals: list[bool] | None = None
    """residuals[i]: add the encoder-i output to the upsampled vector before decoder i.
    None means true for every transition."""
    block: BlockArgs = field(default_factory=BlockArgs)
    """Block settings shared by all stages."""
    pooling_type: str = "simple_indexed_matmul"
    """``simple``, ``simple_repeat``, ``simple_indexed_matmul`` (multi-linear upsampling, the
    paper's default) or ``simple_non_param``, and their combinations (see `Pooling`)."""
    lambda_level: float = 0.0
    """Weight of the next-level prediction loss; > 0 adds the level head."""
    vocab_size: int = BYTE_VOCAB
    """Output classes; -1 means the byte vocabulary (258)."""
    norm_eps: float = 1e-5
    """Epsilon of the final RMSNorm and of the level head's norm."""
    seed: int = 42
    """Seed for the weight initialisation (applied by the trainer around model construction), so
    the initial weights are the same for any number of ranks."""
    stage_bucket: int = 128
    """Each batch runs every stage below the byte level on as many positions as its rows need:
    the largest pooled count, rounded up to a multiple of this (so that the set of shapes, and of
    compiled kernels, stays small), capped by `max_seqlens`. 0 pads every stage to its
    `max_seqlens` cap, as the reference does. Logits do not depend on it (not a reference key)."""

    def __post_init__(self) -> None:
        dims = self.dimensions
        require(isinstance(dims, list) and len(dims) >= 1, "dimensions", "needs at least one stage")
        n = len(dims)
        if self.sliding_windows is None:
            self.sliding_windows = [-1] * n
        if self.max_seqlens is None:
            self.max_seqlens = [-1] * n
        if self.residuals is None:
            self.residuals = [True] * (n - 1)
        if self.vocab_size == -1:
            self.vocab_size = BYTE_VOCAB
        for name in ("layers", "head_dims", "sliding_windows", "max_seqlens"):
            value = getattr(self, name)
            require(len(value) == n, name, f"has {len(value)} entries, dimensions has {n}")
        require(len(self.residuals) == n - 1, "residuals",
                f"has {len(self.residuals)} entries, needs one per transition ({n - 1})")
        for i, (d, hd, nl) in enumerate(zip(dims, self.head_dims, self.layers)):
            require(d >= 1, f"dimensions[{i}]", f"must be >= 1, got {d}")
            require(nl >= 0, f"layers[{i}]", f"must be >= 0, got {nl}")
            require(hd >= 2 and hd % 2 == 0, f"head_dims[{i}]", f"must be even and >= 2 (RoPE), got {hd}")
            require(d % hd == 0, f"head_dims[{i}]", f"{hd} does not divide dimensions[{i}] = {d}")
            kv = self.block.n_kv_heads
            require(kv is None or (d // hd) % kv == 0, "block.n_kv_heads",
                    f"{kv} does not divide the {d // hd} heads of stage {i}")
        for i, w in enumerate(self.sliding_windows):
            require(w == -1 or w >= 1, f"sliding_windows[{i}]", f"must be -1 or >= 1, got {w}")
        for i, m in enumerate(self.max_seqlens):
            require(m == -1 or m >= 1, f"max_seqlens[{i}]", f"must be -1 or >= 1, got {m}")
        pooling = Pooling.parse(self.pooling_type)
        if pooling.non_param:
            for i in range(n - 1):
                require(dims[i + 1] % dims[i] == 0, "pooling_type",
                        f"{self.pooling_type} needs each width to be a multiple of the previous one, "
                        f"but dimensions[{i + 1}] = {dims[i + 1]} is not a multiple of dimensions[{i}] = {dims[i]}")
        require(self.lambda_level >= 0, "lambda_level", f"must be >= 0, got {self.lambda_level}")
        require(self.vocab_size >= 1, "vocab_size", f"must be >= 1 or -1, got {self.vocab_size}")
        require(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        require(isinstance(self.stage_bucket, int) and self.stage_bucket >= 0, "stage_bucket",
                f"must be an integer >= 0, got {self.stage_bucket!r}")

    @property
    def n_levels(self) -> int:
        """L, the number of pooling transitions."""
        return len(self.dimensions) - 1

    @property
    def pooling(self) -> Pooling:
        return Pooling.parse(self.pooling_type)

    def n_heads(self, stage: int) -> int:
        return self.dimensions[stage] // self.head_dims[stage]

    def n_kv_heads(self, stage: int) -> int:
        return self.block.n_kv_heads or self.n_heads(stage)

    def stage_lengths(self, seq_len: int) -> list[int]:
        """Longest sequence of every stage for a byte input of `seq_len` (the `max_seqlens` caps;
        what every stage is padded to when `stage_bucket` is 0)."""
        lengths = [seq_len]
        for m in self.max_seqlens[1:]:
            lengths.append(lengths[-1] if m == -1 else min(m, lengths[-1]))
        return lengths
