"""Where a distilled (consistency) run should re-enter the noise: FCD of 2- and 3-call multistep consistency sampling
(and 2-call DDIM steps) with the intermediate levels swept, on a tuning seed, and the best of them checked on a held-out seed.

    python benchmarks/experiments/consistency_levels.py DISTILLED [--tune-seed 0] [--check-seed 1]
        [--levels 0.2 0.4 0.606 0.821 1.2 1.643 2.5 4.071 9.353] [--three 6] [--name consistency_levels]

Each grid goes in as the run's grid for its step count (`Run.grids`, as tune-steps stores them), so the sampling is
the library's own. Writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import diffusekit as dk
from diffusekit import samplers
from diffusekit.evaluate import Evaluator

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--levels", type=float, nargs="+", default=[0.2, 0.4, 0.606, 0.821, 1.2, 1.643, 2.5, 4.071, 9.353])
    p.add_argument("--three", type=int, default=6, help="3-call grids: pairs from the best this many 2-call levels")
    p.add_argument("--tune-seed", type=int, default=0)
    p.add_argument("--check-seed", type=int, default=1)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--reference-data", default="fashion-mnist:test")
    p.add_argument("--name", default="consistency_levels")
    a = p.parse_args()
    samplers.CONSISTENCY_SAMPLING.pop("sigma_min")  # the grids here are given whole (run.grids)
    run = dk.load(a.run, device="cpu")
    ev = Evaluator(a.reference_data, n_boot=10)
    smax = run.model_config.sigma_max
    points = []

    def fcd(grid, seed, sampler="consistency"):
        run.grids = {len(grid) - 1: grid}
        r = ev(run.sample(a.n, seed=seed, batch_size=500, sampler=sampler, steps=len(grid) - 1, grid="tuned"))
        points.append({"grid": grid, "sampler": sampler, "seed": seed, "fcd": r["fcd"], "fcd_se": r["fcd_se"]})
        print(points[-1], flush=True)
        return r["fcd"]

    fcd([smax, 0.0], a.tune_seed)
    two = sorted(a.levels, key=lambda s: fcd([smax, s, 0.0], a.tune_seed))
    for hi, lo in itertools.combinations(sorted(two[:a.three], reverse=True), 2):
        fcd([smax, hi, lo, 0.0], a.tune_seed)
    for s in a.levels:  # the same levels, re-entered along the first jump's own direction (DDIM's step)
        fcd([smax, s, 0.0], a.tune_seed, "ddim")
    tuned = [q for q in points if q["seed"] == a.tune_seed]
    best = {f"{k} {m}": min((q for q in tuned if len(q["grid"]) == k + 1 and q["sampler"] == m), key=lambda q: q["fcd"])
            for k, m in ((1, "consistency"), (2, "consistency"), (3, "consistency"), (2, "ddim"))}
    check = {k: {"grid": q["grid"], "fcd": fcd(q["grid"], a.check_seed, q["sampler"])} for k, q in best.items()}
    check["default 2"] = {"grid": [smax, 0.821, 0.0], "fcd": fcd([smax, 0.821, 0.0], a.check_seed)}
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"run": a.run, "n": a.n, "tune_seed": a.tune_seed,
                                                         "check": check, "points": points}, indent=1))
    print(json.dumps(check, indent=1))


if __name__ == "__main__":
    main()
