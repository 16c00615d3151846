"""Training under DeepSpeed: the loop (`trainer`), complete-or-ignored checkpoint directories
(`checkpoint`), the learning-rate schedule (`lr_schedule`) and the choice of accelerator made
before DeepSpeed is imported (`accelerator`). `aunet/train.py` is the entry point.

Nothing is imported here, so `aunet.training.accelerator` can run before DeepSpeed loads.
"""
