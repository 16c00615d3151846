"""`ahead`: run an iterator in a thread of its own, a few items ahead of its consumer.

The readers' pipeline stages (decompressing and cutting lines, parsing, decoding Parquet) and
`aunet.segment.job`'s segmenting stage each run in such a thread; every stage keeps the order,
so the output is that of a serial run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def ahead(items: Iterable[T], depth: int = 2, name: str = "aunet-ahead") -> Iterator[T]:
    """`items`, produced in a thread of their own at most `depth` items ahead of the consumer,
    in order; an exception in the producer is raised here, after the items before it. Closing
    this generator (or leaving it early) stops the producer and waits for it, so whatever the
    producer reads from is free again when this returns."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)  # unblock a producer waiting for room
            except queue.Empty:
                pass
        thread.join()
