"""Resident memory of a streamed `anomaly score` under torchrun, chunk by chunk (issue 30): many small chunks, so
that memory kept per chunk (not per row) shows within minutes. Every rank prints, every 20 chunks
(or as given): its RSS, its largest RSS since the last print,
glibc's heap in use, free and mmapped (MiB), and the count of Python objects.

    OMP_NUM_THREADS=1 taskset -c 1 torchrun --standalone --nproc_per_node=2 benchmarks/experiments/stream_chunks_rss.py DET CSV OUT 100

DET: a table detector (as benchmarks/robustness/stream_rss.py fits one), CSV: rows to score, OUT: the scores file,
then the rows per chunk and (optional) how many chunks between prints.
"""
import ctypes
import gc
import os
import sys

import diffusekit as dk
from diffusekit import checkpoint, runtime


class MallInfo2(ctypes.Structure):
    _fields_ = [(k, ctypes.c_size_t) for k in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap():
    """glibc's heap in MiB: in use from the arenas, free in the arenas, in mmapped blocks (0s elsewhere)."""
    try:
        f = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return 0, 0, 0
    f.restype = MallInfo2
    m = f()
    return tuple(round(v / 2**20, 1) for v in (m.uordblks, m.fordblks, m.hblkhd))


def high_water():
    """The largest resident memory (MiB) since the last call (Linux: VmHWM, then reset through clear_refs)."""
    try:
        line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration):
        return 0


def main():
    release, count = checkpoint.release_memory, [0]
    every = int(sys.argv[5]) if len(sys.argv) > 5 else 20

    def probe():  # called once per chunk by PartialCsv.fill
        release()
        count[0] += 1
        if count[0] % every == 0:
            rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
            print(os.environ.get("RANK", "0"), count[0], round(rss, 1), high_water(), *heap(), len(gc.get_objects()),
                  flush=True)

    checkpoint.release_memory = probe
    runtime.init_distributed(runtime.pick_device("cpu"))
    det = dk.AnomalyDetector.load(sys.argv[1])
    det.score_csv(sys.argv[2], sys.argv[3], chunk_rows=int(sys.argv[4]))
    runtime.leave_process_group()


if __name__ == "__main__":
    main()
