"""Where a toy's log-density gap comes from (issue 32): for one run of benchmarks/quality/lowdim_sampling.py and
one sampling seed, each configuration's gap, the points whose true log-density is below a threshold (deep in the
checkerboard's white squares, far from a curve), their share of the gap, and the gap without them. Configurations:
the default at 20 steps, the benchmark's reference (the SDE, eta 1, 500 steps), and 500 steps of the probability-flow
ODE (DPM-Solver++ 2M) and of the default's own sampler (dpmpp-2m-sde at the vector default's eta): what 20 steps
converge to. Prints; writes nothing.

    python benchmarks/experiments/lowdim_deep_points.py checkerboard --seed 6 --sample-seed 17
"""
import argparse
import sys
from pathlib import Path

import diffusekit as dk
from diffusekit.samplers import VECTOR_ETA

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quality"))
from lowdim_sampling import REFERENCE, TOYS, log_density, true_sets  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=TOYS)
    p.add_argument("--seed", type=int, required=True, help="training seed of the run in --runs")
    p.add_argument("--sample-seed", type=int, required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--below", type=float, default=-50.0, help="the log-density threshold")
    p.add_argument("--runs", type=Path, default=Path("runs/lowdim"))
    a = p.parse_args()
    run = dk.load(a.runs / f"{a.name}_seed{a.seed}")
    truth, _ = true_sets(a.name, a.sample_seed, a.n)
    true_mean = log_density(a.name, truth).mean()
    configs = {"default (20 steps)": {}, "reference (SDE, eta 1, 500)": REFERENCE,
               "ODE, 500 steps": {"sampler": "dpmpp-2m", "steps": 500, "grid": "karras"},
               f"default's SDE, eta {VECTOR_ETA}, 500": {"sampler": "dpmpp-2m-sde", "steps": 500, "grid": "karras",
                                                       "eta": VECTOR_ETA}}
    for label, options in configs.items():
        ld = log_density(a.name, run.sample(a.n, seed=a.sample_seed, **options).to_numpy(float))
        deep = ld < a.below
        print(f"{label:30s} gap {ld.mean() - true_mean:+.3f}  points below {a.below:g}: {int(deep.sum())} (their share "
              f"of the gap {ld[deep].sum() / len(ld):+.3f}); gap without them {ld[~deep].sum() / len(ld) - true_mean:+.3f}",
              flush=True)


if __name__ == "__main__":
    main()
