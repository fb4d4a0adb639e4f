"""Few-step sampling: FCD against network calls (NFE) for every sampler, on one trained Fashion-MNIST run.

    python benchmarks/quality/bench_nfe.py RUN [--n 500] [--nfe 5 10 20 50] [--samplers ...] [--ancestral 1000] [--device cuda]
                                       [--rho R] [--sigma-min S] [--sigma-max S] [--eta E]

Writes benchmarks/results/nfe.json and benchmarks/results/nfe.png (FCD vs NFE, one line per sampler), or to --results.
--ancestral N adds the N-step ancestral (ddpm) reference point.
Every point uses the same seeds; FCD by our evaluator against fashion-mnist:test (with bootstrap SE).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from diffusekit import load
from diffusekit.evaluate import Evaluator
from diffusekit.samplers import KNOBS, SAMPLERS, SampleConfig, sample, steps_for_nfe
from plots import line_plot

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--ancestral", type=int, default=0, help="also the N-step ancestral sampler (ddpm) as a reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fm-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (every point uses the same seeds)")
    p.add_argument("--name", default="nfe", help="stem of the result files")
    p.add_argument("--rho", type=float, default=None, help="karras grid spacing (default 7)")
    p.add_argument("--sigma-min", type=float, default=None, help="lowest grid sigma (default: the model's)")
    p.add_argument("--sigma-max", type=float, default=None, help="highest grid sigma (default: the model's)")
    p.add_argument("--eta", type=float, default=None, help="stochasticity of the samplers that take eta")
    a = p.parse_args()
    grid = {"rho": a.rho, "sigma_min": a.sigma_min, "sigma_max": a.sigma_max}
    run = load(a.run, device=a.device)
    ev = Evaluator(f"fashion-mnist:{a.fm_dir + ':' if a.fm_dir else ''}test", n_boot=10)
    table = {}
    for name in a.samplers:
        table[name] = []
        for nfe in a.nfe + ([a.ancestral] if name == "ddpm" and a.ancestral else []):
            steps = steps_for_nfe(name, nfe)
            if name == "heun" and steps < 2:
                continue
            t0 = time.time()
            knobs = {"eta": a.eta} if a.eta is not None and "eta" in KNOBS[name] else {}
            x = sample(run.denoiser, run.model_config, a.n, SampleConfig.from_options(
                sampler=name, steps=steps, seed=a.seed, batch_size=1000, **grid, **knobs), device=a.device)
            r = ev(run.codec.decode(x))
            real_nfe = 2 * steps - 1 if name == "heun" else steps
            table[name].append({"nfe": real_nfe, "steps": steps, "fcd": r["fcd"], "fcd_se": r["fcd_se"],
                                "precision": r["precision"], "recall": r["recall"], "seconds": round(time.time() - t0, 1)})
            print(name, table[name][-1], flush=True)
    a.results.mkdir(parents=True, exist_ok=True)
    out = {"run": a.run, "n_samples": a.n, "seed": a.seed, "device": a.device, **grid, "eta": a.eta, "load_avg_end": list(os.getloadavg()), "table": table}
    (a.results / f"{a.name}.json").write_text(json.dumps(out, indent=2))
    line_plot({name: [(r["nfe"], r["fcd"]) for r in rows] for name, rows in table.items()}, a.results / f"{a.name}.png",
              f"FCD vs NFE, {a.n} samples, {a.run}", "NFE")
    best = min(r["fcd"] for rows in table.values() for r in rows)
    at10 = min((r["fcd"] for rows in table.values() for r in rows if r["nfe"] <= 10), default=float("nan"))
    print("| sampler | " + " | ".join(f"NFE {n}" for n in a.nfe) + " |")
    for name, rows in table.items():
        print(f"| {name} | " + " | ".join(f"{r['fcd']:.3f} ({r['nfe']})" for r in rows) + " |")
    print(f"best at <= 10 NFE: {at10:.3f}; best overall: {best:.3f}; ratio {at10 / best:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
