"""Masks computed in forked DataLoader workers after the parent used the segmenter.

Prints one line per document: index and the mask's hex digest. Run by test_segmenter_fork.py
under a timeout, so a deadlock in a worker fails the test instead of hanging it.
"""

import hashlib
import sys

import torch
from torch.utils.data import DataLoader, Dataset

from aunet import Segmenter

SEG = Segmenter({"word1": "1@1", "word2": "2@1"})
DOCS = [f"document {i}: the quick brown fox, {i * 7919} jumps.\n".encode() * (1 + i % 5) for i in range(64)]


class Docs(Dataset):
    def __len__(self):
        return len(DOCS) // 4

    def __getitem__(self, i):
        # Several threads inside the forked worker: the case that deadlocks with a global pool.
        masks = SEG.levels_batch(DOCS[4 * i : 4 * i + 4], threads=2)
        return [hashlib.sha1(m.tobytes()).hexdigest() for m in masks]


def main():
    SEG.levels_batch(DOCS, threads=2)  # the parent uses its threads before forking
    loader = DataLoader(Docs(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    for i, digests in enumerate(loader):
        for j, d in enumerate(digests):
            print(4 * i + j, d)
    sys.stdout.flush()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
