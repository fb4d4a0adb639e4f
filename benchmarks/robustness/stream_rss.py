"""Scoring a long CSV with bounded memory (issue 30): peak RSS of `anomaly score` (streamed: read, scored and written
in chunks) against the number of rows, beside the whole file scored at once (`AnomalyDetector.score`).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/robustness/stream_rss.py --rows 10000 100000 1000000
    python benchmarks/robustness/stream_rss.py --rows 1000000 --whole-up-to 0 --nproc 2   # sharded over torchrun

A detector is fit (500 steps, one model) on 3,000 normal rows of a ten-column table (the gmm8 ring beside eight
Gaussian columns); each CSV holds that many rows drawn the same way plus 1% off the ring. Every measurement is one
fresh process (with --nproc N: torchrun's N, each scoring a share of every chunk); peak RSS is the largest ru_maxrss
of them; the resident memory of the largest is also sampled every two seconds, and its largest value reported for each
tenth of the scores written (flat if memory does not grow with the file). Writes benchmarks/results/stream_rss.json
(--nproc N: stream_rss_nprocN.json).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent.parent / "results"
COLUMNS = ["a", "b"] + [f"g{i}" for i in range(8)]
WHOLE = "import sys, diffusekit as dk; dk.AnomalyDetector.load(sys.argv[1]).score(sys.argv[2], fpr=0.01)"


def rows(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    angle = g.integers(0, 8, n) * np.pi / 4
    ring = np.stack([4 * np.cos(angle), 4 * np.sin(angle)], 1) + 0.3 * g.standard_normal((n, 2))
    off = g.random(n) < 0.01
    ring[off] *= 0.2  # inside the ring: anomalous
    return np.concatenate([ring, g.standard_normal((n, 8))], 1)


def write(path: Path, x: np.ndarray):
    with open(path, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for start in range(0, len(x), 100_000):
            np.savetxt(f, x[start:start + 100_000], delimiter=",", fmt="%.6g")


def peak(cmd, written: Path | None = None) -> tuple[float, float, list]:
    """(peak RSS in MiB of the child or of its largest descendant, seconds, trace). With `written` (the output being
    written) the trace holds [seconds, MiB written, largest RSS of the processes in MiB] every two seconds."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t, trace = time.time(), []
    child = subprocess.Popen([sys.executable, "-c", probe, *cmd], stdout=subprocess.PIPE, text=True)
    while child.poll() is None:
        time.sleep(2)
        if written is not None and written.exists():
            rss = [_rss_mib(q) for q in _descendants(child.pid)]
            trace.append([round(time.time() - t), round(written.stat().st_size / 2**20, 2), max(rss, default=0)])
    out = child.stdout.read()
    assert child.returncode == 0, f"{cmd} failed"
    return int(out.strip().splitlines()[-1]) / 1024, time.time() - t, trace


def _descendants(pid: int) -> list[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        q = todo.pop()
        found.append(q)
        todo += [c for c, p in parent.items() if p == q]
    return found


def _rss_mib(pid: int) -> float:
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS"))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration):
        return 0.0


def by_tenth(trace: list) -> list:
    """The largest RSS seen while the output was in each tenth of its final size (the last tenth: to the end)."""
    final = max((w for _, w, _ in trace), default=0) or 1
    return [max((r for _, w, r in trace if k <= 10 * w / final < k + 1 or (k == 9 and w >= final)), default=None)
            for k in range(10)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--whole-up-to", type=int, default=1_000_000, help="also score files up to this size at once")
    p.add_argument("--nproc", type=int, default=1, help="score streamed under torchrun with this many processes")
    a = p.parse_args()
    launch = [sys.executable, "-m", "diffusekit"] if a.nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={a.nproc}", "-m", "diffusekit"]
    tmp = Path(tempfile.mkdtemp(prefix="stream-rss-"))
    write(tmp / "normal.csv", rows(3000, 0))
    subprocess.run([sys.executable, "-m", "diffusekit", "anomaly", "fit", "--data", str(tmp / "normal.csv"), "--out",
                    str(tmp / "det"), "--steps", "500", "--models", "1", "--no-progress"], check=True)
    out = {"command": " ".join(sys.argv), "threads": 1, "processes": a.nproc, "results": []}
    for n in a.rows:
        write(tmp / "big.csv", rows(n, 1))
        mib, sec, trace = peak([*launch, "anomaly", "score", str(tmp / "det"), "--data", str(tmp / "big.csv"),
                                "--out", str(tmp / "s.csv"), "--no-progress"], tmp / "s.csv.partial")
        r = {"rows": n, "file_mib": round((tmp / "big.csv").stat().st_size / 2**20, 1), "streamed_peak_rss_mib":
             round(mib, 1), "streamed_seconds": round(sec, 1), "rss_mib_by_tenth_of_output": by_tenth(trace)}
        if n <= a.whole_up_to:
            mib, sec, _ = peak([sys.executable, "-c", WHOLE, str(tmp / "det"), str(tmp / "big.csv")])
            r.update(whole_peak_rss_mib=round(mib, 1), whole_seconds=round(sec, 1))
        print(json.dumps(r), flush=True)
        out["results"].append(r)
        (tmp / "s.csv").unlink()
    name = "stream_rss.json" if a.nproc == 1 else f"stream_rss_nproc{a.nproc}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
