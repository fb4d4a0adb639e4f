"""Training on an image folder larger than memory allows (issue 30): peak RSS of `train` on folders of N files, read
batch by batch (data.LazyImages, what `train` does for a folder whose decoded images exceed data.IN_MEMORY_BYTES)
beside the same folder held in memory, and the seconds to the first step.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/robustness/folder_rss.py --files 20000 200000

Each folder holds N 32 x 32 colour PNGs (smooth random gradients, in 10 class folders); each measurement is one fresh
process training 20 steps (preset tiny, batch 64), its peak RSS its ru_maxrss. The threshold is set to 0 (read batch
by batch) or past the folder (held) for the comparison. Writes benchmarks/results/folder_rss.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent.parent / "results"
TRAIN = ("import sys, time, diffusekit as dk, diffusekit.data as d; d.IN_MEMORY_BYTES = int(sys.argv[3]); "
         "t = time.time(); dk.train(sys.argv[1], sys.argv[2], steps=20, preset='tiny', batch_size=64, sample_every=0, "
         "ckpt_every=20, progress=False); print(time.time() - t)")


def fill(folder: Path, start: int, stop: int):
    g = np.random.default_rng(start)
    ramp = np.linspace(0, 1, 32)
    for i in range(start, stop):
        c = g.random((3, 3))
        a = (c[:, 0, None, None] * ramp[None, :, None] + c[:, 1, None, None] * ramp[None, None, :] + c[:, 2, None, None])
        img = (np.moveaxis(a, 0, -1) / 3 * 255).astype(np.uint8)
        d = folder / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:07d}.png", compress_level=1)


def peak(args) -> tuple[float, float]:
    """(peak RSS in MiB of the child, its training seconds)."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], check=True, capture_output=True, "
             "text=True); print(r.stdout.strip().splitlines()[-1]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-c", TRAIN, *args], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[-1]) / 1024, float(out[-2])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", nargs="+", type=int, default=[20_000, 200_000])
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="folder-rss-"))
    folder, made = tmp / "images", 0
    out = {"command": " ".join(sys.argv), "threads": 1, "results": []}
    for n in sorted(a.files):
        t = time.time()
        fill(folder, made, n)
        made = n
        r = {"files": n, "folder_mib": round(sum(f.stat().st_size for f in folder.rglob("*.png")) / 2**20, 1),
             "decoded_mib": round(n * 32 * 32 * 3 * 4 / 2**20, 1), "write_seconds": round(time.time() - t, 1)}
        for name, limit in (("batch_by_batch", 0), ("held", 1 << 62)):
            mib, sec = peak([str(folder), str(tmp / f"run-{name}-{n}"), str(limit)])
            r.update({f"{name}_peak_rss_mib": round(mib, 1), f"{name}_seconds": round(sec, 1)})
            shutil.rmtree(tmp / f"run-{name}-{n}")
        print(json.dumps(r), flush=True)
        out["results"].append(r)
    (RESULTS / "folder_rss.json").write_text(json.dumps(out, indent=1) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
