"""One large sample set per configuration on the toys of benchmarks/quality/lowdim_sampling.py (issue 32), measured
finely: the unbiased energy distance against many fresh true points, the log-density gap, the share of samples below
the truth's 0.1% quantile of log-density (points stranded between the data's modes or off its curves; 0.001 for true
points), and for gmm8 the share of samples nearest each of its eight modes, beside that of the 20,000 points every
`toy:gmm8` run trains on.

    python benchmarks/experiments/lowdim_precise.py --seed 7 --sample-seeds 1 --n 100000 --only gmm8 \\
        --variant 'default={}' --variant 'reference={"sampler": "dpmpp-2m-sde", "steps": 500, "grid": "karras", "eta": 1.0}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import diffusekit as dk
from diffusekit.analytic import gmm8
from diffusekit.data.toys import toy_data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quality"))
from lowdim_sampling import (TOYS, between_blocks, log_density, runs_arguments, truth_blocks,  # noqa: E402
                             unbiased_energy_distance)

BLOCK = 20000  # true points per block of the unbiased estimate's reference set


GMM8 = gmm8()


def gmm8_shares(x: np.ndarray) -> np.ndarray:
    modes = GMM8.means.numpy()
    nearest = np.argmin(((x[:, None] - modes[None]) ** 2).sum(-1), 1)
    return np.bincount(nearest, minlength=len(modes)) / len(x)


def shares_text(share: np.ndarray, n: int) -> str:
    w = GMM8.weights.numpy()
    chi2 = n * float(((share - w) ** 2 / w).sum())  # against the true weights, 7 degrees of freedom
    return f"shares {' '.join(f'{s:.4f}' for s in share)} (chi2 {chi2:.1f} at n {n})"


def main():
    p = runs_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--truth-points", type=int, default=100000, help=f"fresh true points (a multiple of {BLOCK})")
    p.add_argument("--variant", action="append", required=True, help="LABEL=JSON sampling options")
    a = p.parse_args()
    if a.truth_points % BLOCK or a.truth_points < 2 * BLOCK:
        p.error(f"--truth-points must be a multiple of {BLOCK} of at least two blocks, got {a.truth_points}")
    for name in [t for t in (a.only or TOYS) if t in TOYS]:
        run = dk.load(a.runs / f"{name}_seed{a.seed}")
        blocks = truth_blocks(name, a.seed, BLOCK, a.truth_points)
        truth = np.concatenate(blocks)
        scale = truth.std(0) + 1e-12
        yy = between_blocks(blocks, scale)
        true_ld = log_density(name, truth)
        low = np.quantile(true_ld, 0.001)
        if name == "gmm8":
            train = toy_data(name)  # the points every toy:gmm8 run trains on
            print(f"gmm8 training set (toy:gmm8): {shares_text(gmm8_shares(train), len(train))}")
        for v in a.variant:
            label, options = v.split("=", 1)
            for seed in a.sample_seeds:
                t0 = time.time()
                x = run.sample(a.n, seed=seed, **json.loads(options)).to_numpy(float)
                ld = log_density(name, x)
                extra = f"  {shares_text(gmm8_shares(x), a.n)}" if name == "gmm8" else ""
                print(f"{name:12s} {label:20s} seed {seed}  unbiased {unbiased_energy_distance(x, blocks, yy, scale):.6f}"
                      f"  gap {ld.mean() - true_ld.mean():+.3f}  below the truth's 0.1% {np.mean(ld < low):.5f}{extra}"
                      f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
