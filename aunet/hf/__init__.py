"""The HuggingFace transformers format: `aunet export --format hf` writes a directory that
`AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)` load.

- `export`: writes the directory (weights, config.json, generation and tokenizer configs, the
  code files below, a model card) from an `aunet export` or a run's checkpoints;
- `format`: config.json <-> aunet's training config, without transformers (`load_model` and
  `checkpoint.init_ckpt_path` read such directories through it);
- `configuration_aunet`, `modeling_aunet`, `tokenization_aunet`: the code transformers loads
  from the directory (copied there); only these import transformers.

Importing this package imports nothing from transformers.
"""
