"""Does `runtime.gather` (the collective every streamed chunk goes through under torchrun) grow the heap call after
call? (issue 30). Each of two ranks gathers 10,000 rows of scores CALLS times; rank 0 prints its resident memory
every tenth of the calls.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/experiments/gather_rss.py 20000
"""
import resource
import sys

import torch
import torch.distributed as dist

from diffusekit import runtime


def rss_mib() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def main():
    dist.init_process_group("gloo")
    calls, n = int(sys.argv[1]), 10_000
    idx, rank, world = runtime.shard(n)
    for i in range(calls):
        vals = {"score": torch.randn(len(idx), 4, dtype=torch.float64), "flag": torch.zeros(len(idx), dtype=torch.bool)}
        runtime.gather(vals, idx, n, world)
        runtime.release_memory()
        if i % max(1, calls // 10) == 0 and rank == 0:
            print(i, round(rss_mib(), 1), flush=True)
    if rank == 0:
        print("end", round(rss_mib(), 1), "peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
