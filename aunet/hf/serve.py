"""`aunet serve DIR [transformers serve options]`: transformers' own OpenAI-compatible server
(`transformers serve`: /v1/completions, /v1/chat/completions, streaming or not) on an
`aunet export --format hf` directory.

Why a wrapper: `transformers serve --trust-remote-code` loads a model by looking its
architecture name up in the `transformers` module (`getattr(transformers,
config.architectures[0])`, transformers 5.24), where a remote-code class never is, so it fails
with "module transformers has no attribute AUNetForCausalLM". This registers aunet's classes
with the Auto classes and under that name, then runs the same `transformers serve` command with
the same options; the server, its endpoints and its generation loop are transformers'.
"""

from __future__ import annotations

import sys


def register_with_transformers() -> None:
    """AU-Net's config, model and tokenizer known to transformers in this process."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from aunet.hf.configuration_aunet import AUNetConfig
    from aunet.hf.modeling_aunet import AUNetForCausalLM
    from aunet.hf.tokenization_aunet import AUNetTokenizer

    AutoConfig.register(AUNetConfig.model_type, AUNetConfig, exist_ok=True)
    AutoModelForCausalLM.register(AUNetConfig, AUNetForCausalLM, exist_ok=True)
    AutoTokenizer.register(AUNetConfig, slow_tokenizer_class=AUNetTokenizer, exist_ok=True)
    transformers.AUNetForCausalLM = AUNetForCausalLM


def serve(argv: list[str]) -> int:
    """Run `transformers serve` with `argv` (the model directory first, then its options)."""
    try:
        from transformers.cli.transformers import main as transformers_cli
    except ImportError as e:
        raise ImportError("aunet serve needs transformers with its server: pip install 'aunet[hf]'") from e
    register_with_transformers()
    sys.argv = ["transformers", "serve", *argv]
    try:
        transformers_cli()
    except SystemExit as e:  # click ends the command with SystemExit
        return int(e.code or 0)
    return 0
