"""`AUNetConfig`: an AU-Net's `config.json` for HuggingFace transformers.

It holds aunet's own configuration as three plain JSON sections (see `aunet.config.hf_format`, which
reads and writes them): ``aunet_model`` (the model section, SPEC section 4), ``aunet_strategy``
(the segmentation strategy list, ``[key, parameter]`` pairs in stage order, null for a flat
model) and ``aunet_training`` (the rest of the training config: data sources, steps, ...).

This file is copied into every exported directory and loaded by transformers with
``trust_remote_code=True``; it needs transformers only, not aunet.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class AUNetConfig(PretrainedConfig):
    model_type = "aunet"

    aunet_model: dict | None = None
    aunet_strategy: list | None = None
    aunet_training: dict | None = None
    aunet_step: int | None = None
    vocab_size: int = 258
    bos_token_id: int | None = 256
    eos_token_id: int | None = 257
    # A 258-id vocabulary leaves no id for padding: padding reuses EOS, and the attention mask
    # says which positions are padding.
    pad_token_id: int | None = 257
    tie_word_embeddings: bool = False
    use_cache: bool = True
