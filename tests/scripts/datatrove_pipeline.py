"""A datatrove pipeline over a folder of JSONL.zst or Parquet files, as a user writes one; the
datatrove tests run it as a process (so that a task can be SIGKILLed for real)."""

from __future__ import annotations

import argparse
import os
import signal

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader, ParquetReader

from aunet.segment.datatrove import AUNetSegment, AUNetShardWriter


class KillAt(PipelineStep):
    """SIGKILLs its process group (the test starts the pipeline in a session of its own) at
    document `at` of task `task`, after the writer has written earlier documents' shards; once:
    the marker file says it already happened."""

    name = "kill"

    def __init__(self, task: int, at: int, marker: str):
        super().__init__()
        self.task, self.at, self.marker = task, at, marker

    def run(self, data, rank=0, world_size=1):
        for i, doc in enumerate(data):
            if rank == self.task and i == self.at and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os.killpg(os.getpgid(0), signal.SIGKILL)  # the task and any helper process datatrove started
            yield doc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("inputs")
    p.add_argument("--format", choices=["jsonl", "parquet"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--logs", required=True)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-size", default="2KB")
    p.add_argument("--max-document-bytes", type=int, default=64 << 20)
    p.add_argument("--on-error", default="fail")
    p.add_argument("--kill-at", nargs=3, metavar=("TASK", "DOC", "MARKER"))
    args = p.parse_args()
    reader = (JsonlReader(args.inputs, glob_pattern="*.jsonl.zst") if args.format == "jsonl"
              else ParquetReader(args.inputs, glob_pattern="*.parquet"))
    steps = [reader, AUNetSegment({"word1": "1@1", "word2": "2@1"}, batch_size=64, threads=1,
                                  max_document_bytes=args.max_document_bytes, on_error=args.on_error)]
    if args.kill_at:
        steps.append(KillAt(int(args.kill_at[0]), int(args.kill_at[1]), args.kill_at[2]))
    steps.append(AUNetShardWriter(args.out, shard_size=args.shard_size))
    LocalPipelineExecutor(steps, tasks=args.tasks, workers=args.workers, logging_dir=args.logs).run()


if __name__ == "__main__":
    main()
