"""Load an HF export with transformers' Auto classes and print, as JSON, the transformers
version, greedy generate() bytes for a padded batch, and the logits of one forward pass: run
by tests/test_hf.py under the pinned transformers and the oldest supported one."""

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

directory = sys.argv[1]
tok = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
enc = tok(["The cat", "def pool(levels):"], return_tensors="pt", padding=True)
out = model.generate(**enc, max_new_tokens=12, do_sample=False, suppress_tokens=[256, 257])
with torch.no_grad():
    logits = model(**tok(["hello world"], return_tensors="pt")).logits[0]
print(json.dumps({"version": transformers.__version__,
                  "greedy": [row[enc["input_ids"].shape[1]:].tolist() for row in out],
                  "logits": logits.tolist()}))
