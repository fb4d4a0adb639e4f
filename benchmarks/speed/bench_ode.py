"""Wall-clock of the exact likelihood (probability-flow ODE) on a trained run: seconds and network evaluations.

    python benchmarks/speed/bench_ode.py RUN --data SPEC [--n 256] [--batch-size 256] [--rtol 1e-5] [--probes 1] [--json F]

Scores the first --n samples of --data with `likelihood.nll` (the same call as `diffusekit nll`), and prints the
seconds, the mean NFE per sample and the batch's largest (the solver's calls when every call evaluated the whole
batch). Run it under two checkouts (PYTHONPATH=OTHER/src) to compare solver versions side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from diffusekit import load
from diffusekit.data import load_data
from diffusekit.likelihood import NLLConfig, nll


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--json", default="")
    a = p.parse_args()
    run = load(a.run, device="cpu")
    x = load_data(a.data, categorical=run.codec.categories if run.codec.kind == "vector" else ()).x[:a.n]
    estimator = "auto" if a.probes == 1 else "rademacher"
    t = time.perf_counter()
    r = nll(run.denoiser, run.model_config, run.codec, x, NLLConfig(batch_size=a.batch_size, estimator=estimator,
                                                                    probes=a.probes, rtol=a.rtol, atol=a.rtol))
    seconds = time.perf_counter() - t
    out = {"run": a.run, "data": a.data, "n": len(x), "seconds": round(seconds, 2), "nfe_mean": float(r["nfe"].mean()),
           "nfe_max": float(r["nfe"].max()), "nats_mean": float(r["nats"].mean()), "threads": torch.get_num_threads(),
           "load_avg": os.getloadavg()}
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
