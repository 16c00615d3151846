"""Using a trained model: `export` (checkpoint -> safetensors, and `load_model`), `generate`
(the cached hierarchical generator), `evaluate` (held-out bits per byte) and
`lm_eval_adapter` (the lm-evaluation-harness model `aunet`).

Nothing is imported here: the adapter needs the optional `lm-eval` package.
"""
