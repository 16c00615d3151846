"""Read one epoch of one rank's share of a shard directory, touching every byte of each
document (text and mask), and print the documents read as JSON (see test_loader.py)."""

import json
import sys

import numpy as np

from aunet.data import ShardSource
from aunet.data.doc_order import DocOrder


def main(directory: str, rank: int, world: int) -> None:
    order = DocOrder(ShardSource(directory), rank, world, seed=3, shuffle_buffer=1)  # 1: the first epoch ends exactly where epoch turns 1
    docs, checksum = [], 0
    while True:
        ref = order.next()
        if order.epoch > 0:
            break
        text, mask = order.source.document(*ref)
        checksum += int(np.sum(text, dtype=np.int64)) + int(np.sum(mask, dtype=np.int64))
        docs.append(ref)
    print(json.dumps({"docs": docs, "checksum": checksum}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
