"""Grids fitted to the model (tune-steps) against the default Karras grid: FCD at few network calls, per sampler,
on held-out sampling seeds (the fit's teacher noise is its own seed stream), against the best FCD of the reference
points (many calls).

    python benchmarks/quality/bench_tune_steps.py RUN [--steps 5 10 20] [--orders 1 2] [--samplers dpmpp-2m-sde dpmpp-2m]
                                              [--reference dpmpp-2m-sde:50 dpmpp-2m-sde:100] [--n 1000] [--seeds 1]
                                              [--name tune_steps]

Writes benchmarks/results/NAME.json: the fit's seconds per order, every point's FCD (+- bootstrap SE) and its ratio to
the best point of any kind on the same seed.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from diffusekit import load
from diffusekit.evaluate import Evaluator
from diffusekit.samplers import SampleConfig, sample
from diffusekit.tune import fit_grids

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--orders", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--samplers", nargs="+", default=["dpmpp-2m-sde", "dpmpp-2m"])
    p.add_argument("--reference", nargs="*", default=["dpmpp-2m-sde:50", "dpmpp-2m-sde:100"],
                   help="SAMPLER:STEPS points on the karras grid (the best FCD at any number of calls)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--fit-n", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--reference-data", default="fashion-mnist:test")
    p.add_argument("--name", default="tune_steps")
    p.add_argument("--grids-from", help="a result file of this script: reuse its fitted grids instead of fitting")
    a = p.parse_args()
    run = load(a.run, device="cpu")
    ev = Evaluator(a.reference_data, n_boot=10)
    fits, fit_seconds = {"karras": None}, {}
    if a.grids_from:
        saved = json.loads(Path(a.grids_from).read_text())
        fits.update({k: {int(n): sig for n, sig in v.items()} for k, v in saved["grids"].items() if v is not None})
    for order in [] if a.grids_from else a.orders:
        t0 = time.time()
        fitted = fit_grids(run.denoiser, run.model_config, a.steps, n=a.fit_n, order=order)
        fit_seconds[order] = round(time.time() - t0, 1)
        fits[f"fitted-order{order}"] = {k: sig for k, (sig, _) in fitted.items()}
        print(f"order {order}: fitted in {fit_seconds[order]} s: " + "; ".join(
            f"{k}: " + " ".join(f"{s:.3g}" for s in sig) for k, (sig, _) in fitted.items()), flush=True)

    points = []

    def point(sampler, steps, grid_label, seed):
        t0 = time.time()
        tuned = fits[grid_label]
        c = SampleConfig.from_options(sampler=sampler, steps=steps, seed=seed, batch_size=500,
                                      grid="karras" if tuned is None else "tuned")
        x = sample(run.denoiser, run.model_config, a.n, c, labels=run.model_config.pick_labels(a.n, seed),
                   tuned=tuned)
        r = ev(run.codec.decode(x))
        points.append({"sampler": sampler, "steps": steps, "grid": grid_label, "seed": seed, "fcd": r["fcd"],
                       "fcd_se": r["fcd_se"], "seconds": round(time.time() - t0, 1)})
        print(points[-1], flush=True)

    for seed in a.seeds:
        for ref in a.reference:
            sampler, steps = ref.split(":")
            point(sampler, int(steps), "karras", seed)
        for steps in a.steps:
            for sampler in a.samplers:
                for label in fits:
                    point(sampler, steps, label, seed)
    for seed in a.seeds:
        best = min(q["fcd"] for q in points if q["seed"] == seed)
        for q in points:
            if q["seed"] == seed:
                q["ratio_to_best"] = round(q["fcd"] / best, 3)
    out = {"run": a.run, "n_samples": a.n, "fit_n": a.fit_n, "fit_seconds": fit_seconds, "grids": fits,
           "points": points, "load_avg_end": list(os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(out, indent=2))
    for q in points:
        print(f"seed {q['seed']} {q['sampler']:14s} {q['steps']:4d} {q['grid']:14s} FCD {q['fcd']:.3f} +- "
              f"{q['fcd_se']:.3f}  x{q['ratio_to_best']:.2f}")


if __name__ == "__main__":
    main()
