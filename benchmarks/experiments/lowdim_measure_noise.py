"""How much of issue 32's energy distance is the measure's own noise: on a toy run trained by
benchmarks/quality/lowdim_sampling.py, each configuration is sampled at several sampling seeds and measured against
several fresh sets of true points, as the benchmark measures one (20,000 each, its V-statistic); then, per sampling
seed, without the finite-sample bias: the unbiased (U-statistic) energy distance against all the true sets at once.

    python benchmarks/experiments/lowdim_measure_noise.py --seed 7 --sample-seeds 30 31 32 33 34 --only gmm8 \
        --configs default reference

Prints the matrix (sampling seed x true set), the standard deviation along each axis, and the unbiased estimates
with their mean and standard error.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import diffusekit as dk
from diffusekit.data.toys import toy_data

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "quality"))
from lowdim_sampling import (REFERENCE, TOYS, between_blocks, energy_distance, runs_arguments,  # noqa: E402
                             unbiased_energy_distance)

CONFIGS = {"default": {}, "reference": REFERENCE}


def main():
    p = runs_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--true-sets", type=int, default=5)
    p.add_argument("--configs", nargs="+", default=["default"], choices=list(CONFIGS))
    a = p.parse_args()
    for name in a.only or TOYS:
        run = dk.load(a.runs / f"{name}_seed{a.seed}")
        truths = [toy_data(name, a.n, seed=50_000 + k) for k in range(a.true_sets)]
        scale = truths[0].std(0) + 1e-12
        yy = between_blocks(truths, scale)
        for label in a.configs:
            xs = [run.sample(a.n, seed=s, **CONFIGS[label]).to_numpy(float) for s in a.sample_seeds]
            m = np.array([[energy_distance(x, t, scale) for t in truths] for x in xs])
            unbiased = np.array([unbiased_energy_distance(x, truths, yy, scale) for x in xs])
            print(f"{name} {label}: V-statistic (rows: sampling seeds {a.sample_seeds}; columns: true sets)\n"
                  f"{np.array2string(m, precision=5)}\n  mean {m.mean():.5f}, sd across true sets "
                  f"{m.std(1, ddof=1).mean():.5f}, across sampling seeds {m.std(0, ddof=1).mean():.5f}\n"
                  f"  unbiased against all {a.n * len(truths)} true points: {np.array2string(unbiased, precision=5)}, mean "
                  f"{unbiased.mean():.5f} (standard error {unbiased.std(ddof=1) / math.sqrt(len(xs)):.5f})", flush=True)


if __name__ == "__main__":
    main()
