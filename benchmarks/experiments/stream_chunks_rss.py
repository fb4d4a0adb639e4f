"""Resident memory of a streamed `anomaly score` under torchrun, chunk by chunk (issue 30): many small chunks, so
that memory kept per chunk (not per row) shows within minutes. Every rank prints its RSS every 20 chunks.

    OMP_NUM_THREADS=1 taskset -c 1 torchrun --standalone --nproc_per_node=2 benchmarks/experiments/stream_chunks_rss.py DET CSV OUT 100

DET: a table detector (as benchmarks/robustness/stream_rss.py fits one), CSV: rows to score, OUT: the scores file,
then the rows per chunk.
"""
import os
import sys

import diffusekit as dk
from diffusekit import checkpoint, runtime


def main():
    release, count = checkpoint.release_memory, [0]

    def probe():  # called once per chunk by PartialCsv.fill
        release()
        count[0] += 1
        if count[0] % 20 == 0:
            rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
            print(os.environ.get("RANK", "0"), count[0], round(rss, 1), flush=True)

    checkpoint.release_memory = probe
    runtime.init_distributed(runtime.pick_device("cpu"))
    det = dk.AnomalyDetector.load(sys.argv[1])
    det.score_csv(sys.argv[2], sys.argv[3], chunk_rows=int(sys.argv[4]))
    runtime.leave_process_group()


if __name__ == "__main__":
    main()
