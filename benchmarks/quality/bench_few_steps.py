"""Sampling in few network calls through `Run.sample` (what a user gets): FCD of the default at each step count, and of
named alternatives, on held-out sampling seeds, against the best FCD of the reference points on the same seed.

    python benchmarks/quality/bench_few_steps.py RUN [--steps 4 5 8] [--seeds 1 2] [--n 1000]
        [--reference 10 dpmpp-2m-sde:20 dpmpp-2m-sde:50]
        [--alt 'before={"sampler": "dpmpp-2m", "grid": "karras"}' ...] [--name few_steps]

--reference: the points that stand for "the best at any number of calls": STEPS alone is the default sampling at
that many steps (the run's tuned grid where `tune-steps` made one), SAMPLER:STEPS that sampler on the karras grid.
--alt NAME=JSON: options of `Run.sample` measured at every step count beside the default. Sampling seeds should
differ from the seed anything was tuned on (tune-steps fits on seed 0). Writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import diffusekit as dk
from diffusekit.evaluate import Evaluator

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 5, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--reference", nargs="*", default=["10", "dpmpp-2m-sde:20", "dpmpp-2m-sde:50"])
    p.add_argument("--alt", nargs="*", default=['before={"sampler": "dpmpp-2m", "grid": "karras"}'])
    p.add_argument("--reference-data", default="fashion-mnist:test")
    p.add_argument("--name", default="few_steps")
    a = p.parse_args()
    run = dk.load(a.run, device="cpu")
    ev = Evaluator(a.reference_data, n_boot=10)
    alts = {}
    for spec in a.alt:
        name, _, options = spec.partition("=")
        alts[name] = json.loads(options)
    points = []

    def point(label, seed, **options):
        t0 = time.time()
        x = run.sample(a.n, seed=seed, batch_size=500, **options)
        r = ev(x)
        points.append({"label": label, "seed": seed, "options": options, "sampling": run.sampling(**options),
                       "fcd": r["fcd"], "fcd_se": r["fcd_se"], "seconds": round(time.time() - t0, 1)})
        print(json.dumps(points[-1]), flush=True)

    for seed in a.seeds:
        for ref in a.reference:
            sampler, _, steps = ref.rpartition(":")
            point("reference", seed, steps=int(steps), **({"sampler": sampler, "grid": "karras"} if sampler else {}))
        for steps in a.steps:
            point("default", seed, steps=steps)
            for name, options in alts.items():
                point(name, seed, steps=steps, **options)
    for seed in a.seeds:
        best = min(q["fcd"] for q in points if q["seed"] == seed)
        for q in points:
            if q["seed"] == seed:
                q["ratio_to_best"] = round(q["fcd"] / best, 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(
        {"run": a.run, "n_samples": a.n, "points": points, "load_avg_end": list(os.getloadavg())}, indent=2))
    for q in points:
        print(f"seed {q['seed']} {q['label']:10s} {q['sampling']:60s} FCD {q['fcd']:.3f} +- {q['fcd_se']:.3f}"
              f"  x{q['ratio_to_best']:.2f}")


if __name__ == "__main__":
    main()
