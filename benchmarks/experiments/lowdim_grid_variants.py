"""Variants of the vector default on runs trained by benchmarks/quality/lowdim_sampling.py (issue 32): the 20-step
grid refitted in memory with another `contraction` (tune.fit_grids), and sampling options; energy distance and the
toys' log-density gap by that benchmark's own `measure`, means over the sampling seeds.

    python benchmarks/experiments/lowdim_grid_variants.py --seed 5 --sample-seeds 15 16 --only swissroll gmm8 \\
        --variant 'c0.5 eta0.15={"contraction": 0.5, "eta": 0.15}' --variant 'stored={}'

A variant naming none of VECTOR_TUNING's keys ("contraction", "n", ...) samples on the run's stored grid. Two more
keys change the grid's end: "last_level" replaces its last nonzero level, "add_level" inserts one before 0 (a 21st
step), e.g. --variant 'add 0.002, eta 1 below 0.1={"add_level": 0.002, "eta": 1.0, "s_tmax": 0.1}'.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import diffusekit as dk
from diffusekit.samplers import SampleConfig, VECTOR_TUNING
from diffusekit.tune import fit_grids

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "quality"))
from lowdim_sampling import TABLES, TOYS, measure, runs_arguments  # noqa: E402


def main():
    p = runs_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--variant", action="append", required=True, help='LABEL=JSON options')
    a = p.parse_args()
    for name in a.only or [*TOYS, *TABLES]:
        run = dk.load(a.runs / f"{name}_seed{a.seed}")
        stored = dict(run.grids)
        for v in a.variant:
            label, options = v.split("=", 1)
            options = json.loads(options)
            run.grids = dict(stored)
            if set(options) & set(VECTOR_TUNING):
                tuning = {**VECTOR_TUNING, **{k: options.pop(k) for k in VECTOR_TUNING if k in options}}
                run.grids[SampleConfig.steps] = fit_grids(run.denoiser, run.model_config, [SampleConfig.steps],
                                                          **tuning)[SampleConfig.steps][0]
            grid = [float(t) for t in run.grids[SampleConfig.steps]]
            if "last_level" in options:
                grid[-2] = options.pop("last_level")
            if "add_level" in options:
                grid.insert(-1, options.pop("add_level"))
            run.grids[SampleConfig.steps] = grid
            per_seed = [(r["energy"], r.get("log_density_gap", np.nan)) for r in
                        (measure(run, name, {label: options}, s, a.n)[label] for s in a.sample_seeds)]
            energy, gap = np.mean(per_seed, 0)
            print(f"{name:12s} {label:24s} energy {energy:.5f} gap {gap:+.3f}  per seed "
                  f"{[(round(e, 5), round(g, 3)) for e, g in per_seed]}  last levels "
                  f"{[round(t, 3) for t in run.grids[SampleConfig.steps][-4:]]}", flush=True)


if __name__ == "__main__":
    main()
