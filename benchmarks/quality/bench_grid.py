"""Tune a sampler for few steps: a one-pass coordinate search over its orders (sa-solver), the grid (sigma_max,
sigma_min, rho), eta and the noise window [s_tmin, s_tmax] at a fixed NFE, selected on one seed's samples; then the
chosen settings and the library's default sampler are both run at every NFE of --check-nfe on held-out seeds.

    python benchmarks/quality/bench_grid.py RUN [--nfe 10] [--sampler sa-solver] [--axes ...] [--start JSON] [--n 1000]
                                        [--select-seed 0] [--check-seeds 1 2] [--check-nfe 10 20 50 100]
                                        [--baseline-nfe ...] [--device cpu]

Selection and check use disjoint sampling seeds, so the held-out figures are not picked by the search. The goal's
ratio (issue 3) is printed per held-out seed: the chosen settings at --nfe over the best FCD of any checked point.
Writes benchmarks/results/grid_search.json (or --name).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from diffusekit import load
from diffusekit.evaluate import Evaluator
from diffusekit.samplers import DEFAULT_SAMPLER, KNOBS, SampleConfig, sample, steps_for_nfe

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results
# searched in this order (sa-solver's orders first: they decide whether few steps are stable at all)
AXES = {"predictor_order": [1, 2, 3], "corrector_order": [0, 2, 4],
        "sigma_max": [None, 40.0, 20.0, 10.0, 5.0], "sigma_min": [None, 0.01, 0.03, 0.1],
        "rho": [3.0, 5.0, None, 10.0], "eta": [0.5, 0.75, 1.0], "s_tmin": [0.0, 0.05, 0.2], "s_tmax": [None, 10.0, 2.0]}
GRID = {"sigma_max": None, "sigma_min": None, "rho": None}  # None: the model's range and the Karras spacing 7
KNOB_DEFAULTS = {"eta": 1.0, "s_tmin": 0.0, "s_tmax": None, "predictor_order": 3, "corrector_order": 4}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--sampler", default="sa-solver")
    p.add_argument("--axes", nargs="*", default=list(AXES), choices=list(AXES), help="none: only the check")
    p.add_argument("--start", type=json.loads, default={}, help='JSON settings to start from, e.g. \'{"sigma_max": 40}\'')
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--select-seed", type=int, default=0)
    p.add_argument("--check-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--check-nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--baseline-nfe", type=int, nargs="*", default=None, help="NFEs for the default sampler (default: --check-nfe)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fm-dir", default=None)
    p.add_argument("--name", default="grid_search")
    a = p.parse_args()
    if a.nfe not in a.check_nfe:
        p.error(f"--check-nfe must include --nfe {a.nfe}")
    run = load(a.run, device=a.device)
    ev = Evaluator(f"fashion-mnist:{a.fm_dir + ':' if a.fm_dir else ''}test", n_boot=10)
    axes = {k: AXES[k] for k in a.axes if k in GRID or k in KNOBS[a.sampler]}
    start = {"sampler": a.sampler, **GRID, **{k: v for k, v in KNOB_DEFAULTS.items() if k in KNOBS[a.sampler]}}
    unknown = set(a.start) - set(start)
    if unknown:
        p.error(f"--start: {a.sampler} has no setting {', '.join(sorted(unknown))}")
    start.update(a.start)
    baseline = {"sampler": DEFAULT_SAMPLER, **GRID}  # what `diffusekit sample` does with no options
    cache = {}

    def fcd(cfg, seed, nfe=a.nfe):
        key = json.dumps([cfg, seed, nfe], sort_keys=True)
        if key not in cache:
            t0 = time.time()
            knobs = {k: v for k, v in cfg.items() if k in KNOBS[cfg["sampler"]] and v is not None}
            x = sample(run.denoiser, run.model_config, a.n, SampleConfig.from_options(
                sampler=cfg["sampler"], steps=steps_for_nfe(cfg["sampler"], nfe), seed=seed, batch_size=1000,
                rho=cfg["rho"], sigma_min=cfg["sigma_min"], sigma_max=cfg["sigma_max"], **knobs), device=a.device)
            r = ev(run.codec.decode(x))
            cache[key] = {**cfg, "nfe": nfe, "seed": seed, "fcd": r["fcd"], "fcd_se": r["fcd_se"],
                          "seconds": round(time.time() - t0, 1)}
            print(cache[key], flush=True)
        return cache[key]["fcd"]

    best = dict(start)
    for axis, values in axes.items():  # one pass, in the order listed
        scores = {v: fcd({**best, axis: v}, a.select_seed) for v in values}
        best[axis] = min(scores, key=scores.get)
        print(f"{axis}: {best[axis]} (FCD {scores[best[axis]]:.3f})", flush=True)
    nfes = {"baseline": a.check_nfe if a.baseline_nfe is None else a.baseline_nfe, "chosen": a.check_nfe}
    check = {str(s): {name: {n: fcd(cfg, s, n) for n in nfes[name]} for name, cfg in (("baseline", baseline),
                                                                                       ("chosen", best))}
             for s in a.check_seeds}
    out = {"run": a.run, "nfe": a.nfe, "n_samples": a.n, "select_seed": a.select_seed, "chosen": best,
           "baseline": baseline, "held_out": check, "points": list(cache.values()), "load_avg_end": list(os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(out, indent=2))
    print("chosen:", best)
    for s, rows in check.items():  # the goal's ratio on each held-out seed: at --nfe over the best anywhere
        best_any = min(v for r in rows.values() for v in r.values())
        print(f"seed {s}: " + "; ".join(f"{name} " + " ".join(f"{n}:{v:.3f}" for n, v in r.items())
                                        for name, r in rows.items())
              + f"; at {a.nfe} NFE / best checked: chosen {rows['chosen'][a.nfe] / best_any:.3f}")


if __name__ == "__main__":
    main()
