"""Typed configuration: one dataclass per concern (lingua style), composed into `TrainArgs`,
loaded from YAML with ``key.sub=value`` overrides (`load_config`)."""

from aunet.config.errors import ConfigError
from aunet.config.load import apply_overrides, build, config_from_dict, load_config, to_dict
from aunet.config.model import BOS_ID, BYTE_VOCAB, EOS_ID, MAX_OFFSET, BlockArgs, ModelArgs, Pooling
from aunet.config.train import (
    CheckpointArgs,
    DataArgs,
    DistributedArgs,
    EvalArgs,
    GeneratorArgs,
    LoggingArgs,
    OptimArgs,
    RegexArgs,
    SaveEvery,
    TokenizerArgs,
    TrainArgs,
    ValidationArgs,
)

__all__ = [
    "BOS_ID", "BYTE_VOCAB", "EOS_ID", "MAX_OFFSET",
    "BlockArgs", "CheckpointArgs", "ConfigError", "DataArgs", "DistributedArgs", "EvalArgs",
    "GeneratorArgs", "LoggingArgs", "ModelArgs", "OptimArgs", "Pooling", "RegexArgs", "SaveEvery",
    "TokenizerArgs", "TrainArgs", "ValidationArgs",
    "apply_overrides", "build", "config_from_dict", "load_config", "to_dict",
]
