"""What AU-Net is compared against (benches/compare.py): the BPE tokenizer (`bpe`), shards read
as BPE tokens (`tokenized_source`), and sizing models to a FLOPs-per-byte budget (`sizing`).

Nothing is imported here: `bpe` needs the optional `tokenizers` package.
"""
