"""The sweep that chose the few-step image defaults (samplers.FEW_STEP_IMAGES, FEW_STEP_GRID): FCD of a sampler on a
karras grid with given bounds, one sampling seed (the tuning seed, 0: held-out seeds are bench_few_steps.py's).

    python benchmarks/experiments/few_step_sweep.py RUN SEED N '{"steps": 5, "sigma_min": 0.2, "rho": 10,
                                                                 "sampler": "sa-solver", "knobs": {"eta": 0}}' ...

Each JSON: steps, and optionally sigma_min, sigma_max, rho (the model's range and 7 when absent), sampler (dpmpp-2m)
and its knobs. Prints one JSON line per configuration with its grid and FCD (+- bootstrap SE).
"""
import json
import sys

import torch

from diffusekit import load
from diffusekit.evaluate import Evaluator
from diffusekit.runtime import map_batches
from diffusekit.samplers import generate, get_sampler
from diffusekit.schedules import karras_sigmas

run = load(sys.argv[1], device="cpu")
seed, n = int(sys.argv[2]), int(sys.argv[3])
ev = Evaluator("fashion-mnist:test", n_boot=10)
mc = run.model_config
for spec in sys.argv[4:]:
    c = json.loads(spec)
    sig = karras_sigmas(c["steps"], c.get("sigma_min", mc.sigma_min), c.get("sigma_max", mc.sigma_max), c.get("rho", 7.0))
    fn, knobs = get_sampler(c.get("sampler", "dpmpp-2m")), c.get("knobs", {})

    def batch(idx, seeds):
        with torch.no_grad():
            return generate(run.denoiser, fn, (len(idx), *mc.in_shape), sig, seeds=seeds, **knobs).float()

    r = ev(run.codec.decode(map_batches(batch, n, 500, seed=seed, desc="sampling", progress=False)))
    print(json.dumps({**c, "seed": seed, "fcd": round(r["fcd"], 3), "se": round(r["fcd_se"], 3),
                      "grid": [round(float(s), 3) for s in sig]}), flush=True)
