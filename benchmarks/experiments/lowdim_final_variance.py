"""The last step of a vector sample with the posterior's spread (issue 32): the default sampler returns the denoised
output D(x, sigma) at the grid's last level, the posterior mean, which pulls a thin curve's points toward its centre.
Here that step instead draws from a Gaussian with the posterior's mean and covariance, sigma^2 times the Jacobian of D
(Tweedie's second-order formula; symmetrised, negative eigenvalues clipped), against the runs trained by
benchmarks/quality/lowdim_sampling.py; energy distance and the toys' log-density gap by that benchmark's `measure`
helpers, means over the sampling seeds.

    python benchmarks/experiments/lowdim_final_variance.py --seed 7 --sample-seeds 19 20 --only swissroll moons gmm8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import diffusekit as dk

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "quality"))
from lowdim_sampling import TABLES, TOYS, energy_distance, log_density, runs_arguments, true_sets  # noqa: E402


def posterior_draw(denoiser, x, sigma: float, generator) -> torch.Tensor:
    """One draw of N(D(x), sigma^2 dD/dx) per row of x (rows independent)."""
    x = x.detach().requires_grad_(True)
    y = denoiser(x, x.new_tensor(sigma))
    jac = torch.stack([torch.autograd.grad(y[:, k].sum(), x, retain_graph=True)[0] for k in range(x.shape[1])], 1)
    cov = sigma**2 * (jac + jac.transpose(1, 2)) / 2
    vals, vecs = torch.linalg.eigh(cov)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (y + (vecs @ (vals.clamp(min=0).sqrt() * z).unsqueeze(-1)).squeeze(-1)).detach()


def main():
    p = runs_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    a = p.parse_args()
    for name in a.only or [*TOYS, *TABLES]:
        run = dk.load(a.runs / f"{name}_seed{a.seed}")
        rows = {"default (posterior mean)": [], "posterior draw": []}
        for s in a.sample_seeds:
            truth, _ = true_sets(name, s, a.n)
            scale = truth.std(0) + 1e-12
            true_log_density = float(log_density(name, truth).mean()) if name in TOYS else np.nan
            last = []  # each batch's state before its last step
            mean = run.sample(a.n, seed=s, callback=lambda st: last.append(st) if st["sigma_next"] == 0 else None)
            gen = torch.Generator().manual_seed(10_000 + s)
            drawn = run.to_user(torch.cat([posterior_draw(run.denoiser, st["x"], st["sigma"], gen) for st in last]))
            for label, frame in (("default (posterior mean)", mean), ("posterior draw", drawn)):
                x = frame.to_numpy(float)
                gap = float(log_density(name, x).mean()) - true_log_density if name in TOYS else np.nan
                rows[label].append((energy_distance(x, truth, scale), gap))
        for label, per in rows.items():
            e, g = np.mean(per, 0)
            print(f"{name:12s} {label:26s} energy {e:.5f} gap {g:+.3f}  per seed "
                  f"{[(round(u, 5), round(v, 3)) for u, v in per]}  last level {last[0]['sigma']:.3f}", flush=True)


if __name__ == "__main__":
    main()
