"""The sweep that chose the few-step image defaults (samplers.FEW_STEP_IMAGES, FEW_STEP_GRID): FCD of a sampler on a
karras grid with given bounds, one sampling seed (the tuning seed, 0: held-out seeds are bench_few_steps.py's).

    python benchmarks/experiments/few_step_sweep.py RUN SEED N '{"steps": 5, "sigma_min": 0.2, "rho": 10,
                                                                 "sampler": "sa-solver", "knobs": {"eta": 0}}' ...

Each JSON: steps, and optionally sigma_min, sigma_max, rho (the model's range and 7 when absent), sampler (dpmpp-2m)
and its knobs. Prints one JSON line per configuration with its FCD (+- bootstrap SE).
"""
import json
import sys

from diffusekit import load
from diffusekit.evaluate import Evaluator
from diffusekit.samplers import SampleConfig, sample

run = load(sys.argv[1], device="cpu")
seed, n = int(sys.argv[2]), int(sys.argv[3])
ev = Evaluator("fashion-mnist:test", n_boot=10)
for spec in sys.argv[4:]:
    c = json.loads(spec)
    # samplers.sample, not Run.sample: the run's few-step defaults must not fill what a configuration leaves out
    config = SampleConfig.from_options(sampler=c.get("sampler", "dpmpp-2m"), steps=c["steps"], grid="karras",
                                       sigma_min=c.get("sigma_min"), sigma_max=c.get("sigma_max"), rho=c.get("rho"),
                                       seed=seed, batch_size=500, knobs=c.get("knobs", {}))
    r = ev(run.codec.decode(sample(run.denoiser, run.model_config, n, config)))
    print(json.dumps({**c, "seed": seed, "fcd": round(r["fcd"], 3), "se": round(r["fcd_se"], 3)}), flush=True)
