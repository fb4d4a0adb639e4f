"""The last step of a vector sample with the posterior's spread (issue 32): the default sampler returns the denoised
output D(x, sigma) at the grid's last level, the posterior mean, which pulls a thin curve's points toward its centre.
Here that step instead (1) draws from a Gaussian with the posterior's mean and covariance, sigma^2 times the Jacobian J
of D (Tweedie's second-order formula), or (2) follows the probability flow from sigma to 0 of data that is Gaussian
around the posterior, deterministic: along an eigenvector of J with eigenvalue v / (v + sigma^2) (v the data's variance
there) the flow keeps sqrt(v / (v + sigma^2)) of x's offset from the data's mean where D keeps v / (v + sigma^2), so
x_0 = D + sqrt(J) (I + sqrt(J))^-1 (x - D). J is symmetrised, its eigenvalues clipped at 0 (and, for the flow, at 1).
Against the runs trained by benchmarks/quality/lowdim_sampling.py; energy distance and the toys' log-density gap by
that benchmark's helpers, means over the sampling seeds; --options: sample's options (the sampler before the last
step).

    python benchmarks/experiments/lowdim_final_variance.py --seed 7 --sample-seeds 19 20 --only swissroll moons gmm8
    python benchmarks/experiments/lowdim_final_variance.py --seed 7 --sample-seeds 19 20 21 22 --only swissroll \
        --options '{"sampler": "dpmpp-2m"}'
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import diffusekit as dk

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "quality"))
from lowdim_sampling import TABLES, TOYS, energy_distance, log_density, runs_arguments, true_sets  # noqa: E402


def denoised_jacobian(denoiser, x, sigma: float):
    """D(x, sigma) per row of x (rows independent) and the eigenvalues and eigenvectors of its symmetrised Jacobian."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = denoiser(x, x.new_tensor(sigma))
        jac = torch.stack([torch.autograd.grad(y[:, k].sum(), x, retain_graph=True)[0] for k in range(x.shape[1])], 1)
    vals, vecs = torch.linalg.eigh((jac + jac.transpose(1, 2)) / 2)
    return y.detach(), vals, vecs


def posterior_draw(denoiser, x, sigma: float, generator) -> torch.Tensor:
    """One draw of N(D(x), sigma^2 dD/dx) per row of x."""
    y, vals, vecs = denoised_jacobian(denoiser, x, sigma)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return y + (vecs @ (sigma * vals.clamp(min=0).sqrt() * z).unsqueeze(-1)).squeeze(-1)


def gaussian_flow(denoiser, x, sigma: float, generator=None) -> torch.Tensor:
    """x_0 = D + sqrt(J) (I + sqrt(J))^-1 (x - D) per row of x: the flow from sigma to 0 of a locally Gaussian posterior."""
    y, vals, vecs = denoised_jacobian(denoiser, x, sigma)
    r = vals.clamp(0, 1).sqrt()
    along = (vecs.transpose(1, 2) @ (x - y).unsqueeze(-1)).squeeze(-1)
    return y + (vecs @ (r / (1 + r) * along).unsqueeze(-1)).squeeze(-1)


def main():
    p = runs_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--options", type=json.loads, default={}, help="sample's options, as JSON")
    a = p.parse_args()
    last_steps = {"posterior draw": posterior_draw, "gaussian flow": gaussian_flow}
    for name in a.only or [*TOYS, *TABLES]:
        run = dk.load(a.runs / f"{name}_seed{a.seed}")
        rows = {"posterior mean": [], **{label: [] for label in last_steps}}
        for s in a.sample_seeds:
            truth, _ = true_sets(name, s, a.n)
            scale = truth.std(0) + 1e-12
            true_log_density = float(log_density(name, truth).mean()) if name in TOYS else np.nan
            last = []  # each batch's state before its last step
            frames = {"posterior mean": run.sample(a.n, seed=s, **a.options, callback=lambda st: last.append(st)
                                                  if st["sigma_next"] == 0 else None)}
            gen = torch.Generator().manual_seed(10_000 + s)
            for label, step in last_steps.items():
                frames[label] = run.to_user(torch.cat([step(run.denoiser, st["x"], st["sigma"], gen) for st in last]))
            for label, frame in frames.items():
                x = frame.to_numpy(float)
                gap = float(log_density(name, x).mean()) - true_log_density if name in TOYS else np.nan
                rows[label].append((energy_distance(x, truth, scale), gap))
        for label, per in rows.items():
            e, g = np.mean(per, 0)
            print(f"{name:12s} {label:26s} energy {e:.5f} gap {g:+.3f}  per seed "
                  f"{[(round(u, 5), round(v, 3)) for u, v in per]}  last level {last[0]['sigma']:.3f}", flush=True)


if __name__ == "__main__":
    main()
