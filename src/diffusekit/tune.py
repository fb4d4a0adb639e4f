"""Sampling grids fitted to a model: GITS (Chen et al. 2024, "On the trajectory regularity of ODE-based diffusion
sampling", sec. 4), extended to a multistep solver.

A fine "teacher" solution of the probability-flow ODE is computed for a few hundred starting noises, on a grid of
candidate noise levels. Every coarse step a solver could take between two candidates (for a two-step solver: from
a pair of candidates to a third) is scored by its local error against the teacher's state where it lands, and
dynamic programming picks, for each number of steps, the path of candidates with the least summed error. An error
made at a high noise level is partly undone by the rest of the flow (`contraction` weighs it so). It costs one
teacher solve (a few hundred network calls on a small batch); the errors come from per-sample Gram matrices of the
teacher's states and denoised outputs, since every step of these solvers is a linear combination of them.

The solvers scored are the ODE steps of the samplers as written in `samplers` (data prediction in lambda =
-log(sigma)): order 1 is Euler / DDIM / DPM-Solver++(1), order 2 DPM-Solver++(2M), whose first step is first order and
whose last step (to sigma 0) returns the denoised output.
"""
from __future__ import annotations

import math

import torch

from .config import check
from .precond import guided
from .runtime import sample_seeds
from .samplers import PerSampleNoise, ode_derivative
from .schedules import karras_sigmas

TUNE_STREAM = 3  # sample_seeds stream for the teacher's noise: never the noise of a sampling seed
ORDERS = (1, 2)


def teacher(denoiser, shape, candidates, substeps: int, seeds):
    """Heun (EDM's, `substeps` steps between neighbouring candidates, Karras-spaced within each gap) from noise at
    candidates[0]: the states x_i at every candidate, the denoised outputs D(x_i), and the final state at sigma 0
    (D at the last candidate). Returns a float64 tensor [B, 2K + 1, dim]."""
    c = [float(s) for s in candidates]
    x = PerSampleNoise(seeds).randn(shape) * c[0]
    xs, ds = [], []
    for i, sigma in enumerate(c):
        d = denoiser(x, x.new_tensor(sigma))
        xs.append(x), ds.append(d)
        if i + 1 == len(c):
            break
        fine = karras_sigmas(substeps + 1, c[i + 1], sigma)[:-1].tolist()  # sigma .. c[i + 1]
        for j, (s, s_next) in enumerate(zip(fine[:-1], fine[1:])):
            d_s = d if j == 0 else denoiser(x, x.new_tensor(s))
            dx = ode_derivative(x, s, d_s)
            x_e = x + (s_next - s) * dx
            x = x + (s_next - s) * 0.5 * (dx + ode_derivative(x_e, s_next, denoiser(x_e, x.new_tensor(s_next))))
    return torch.stack(xs + ds + [ds[-1]], 1).flatten(2).double()


def contraction_weights(candidates, sigma_data: float, contraction: float) -> torch.Tensor:
    """The weight of a step's local error by the level sigma it lands on: (sigma_data^2 / (sigma_data^2 +
    sigma^2))^(contraction / 2). At contraction 1 this is the factor by which the probability flow of Gaussian data of
    std sigma_data shrinks an error made at sigma on its way to the sample, so the weighted sum is that error's first-
    order share of the sample's; 0 weighs every step alike (GITS)."""
    s = torch.as_tensor([float(v) for v in candidates], dtype=torch.float64)
    return (sigma_data**2 / (sigma_data**2 + s**2)) ** (contraction / 2)


def step_errors(gram: torch.Tensor, candidates, order: int, weights=None):
    """Mean per-sample L2 error of every coarse step, from the teacher's per-sample Gram matrix [B, 2K+1, 2K+1]
    (order: x_0..x_{K-1}, D_0..D_{K-1}, x at sigma 0). Returns (first [K, K]: first-order step i -> j, last [K]: the
    step i -> 0, second [K, K, K] or None: second-order step to j from i with the previous point k, at [k, i, j];
    inf where the step is impossible). weights [K]: a step's error is multiplied by that of the candidate it lands on
    (`contraction_weights`; the step to 0 keeps 1)."""
    K = len(candidates)
    s = torch.as_tensor([float(v) for v in candidates], dtype=torch.float64)
    X, D, F = (lambda i: i), (lambda i: K + i), 2 * K
    g, every_D = gram, D(torch.arange(K))
    last = torch.sqrt((g[:, every_D, every_D] - 2 * g[:, every_D, F] + g[:, F, F][:, None]).clamp_min(0)).mean(0)
    first = torch.full((K, K), math.inf, dtype=torch.float64)
    second = torch.full((K, K, K), math.inf, dtype=torch.float64) if order == 2 else None
    for i in range(K - 1):
        j = torch.arange(i + 1, K)
        a = s[j] / s[i]  # x_hat_j = a x_i + (1 - a) D_i [+ c (D_i - D_k)]
        b = 1 - a
        gxx, gdd, gxd = g[:, X(i), X(i)], g[:, D(i), D(i)], g[:, X(i), D(i)]
        gxj, gdj, gjj = g[:, X(i), X(j)], g[:, D(i), X(j)], g[:, X(j), X(j)]
        q = (a**2 * gxx[:, None] + b**2 * gdd[:, None] + 2 * a * b * gxd[:, None] + gjj
             - 2 * a * gxj - 2 * b * gdj)
        first[i, j] = torch.sqrt(q.clamp_min(0)).mean(0)
        if second is None or i == 0:
            continue
        k = torch.arange(i)
        h = torch.log(s[i] / s[j])  # [J]
        h_1 = torch.log(s[k] / s[i])  # [Kp]
        c = b[None, :] * 0.5 * h[None, :] / h_1[:, None]  # [Kp, J]: the midpoint correction's weight
        # e = a x_i + (b + c) D_i - c D_k - x_j, expanded through the Gram matrix
        gkk, gxk, gdk = g[:, D(k), D(k)], g[:, X(i), D(k)], g[:, D(i), D(k)]  # [B, Kp]
        gkj = g[:, D(k)][:, :, X(j)]  # [B, Kp, J]
        bc = b + c
        q2 = (q[:, None, :] + (bc**2 - b**2) * gdd[:, None, None] + c**2 * gkk[:, :, None]
              + 2 * a * c * gxd[:, None, None] - 2 * a * c * gxk[:, :, None] - 2 * bc * c * gdk[:, :, None]
              - 2 * c * gdj[:, None, :] + 2 * c * gkj)
        second[:i, i, i + 1:] = torch.sqrt(q2.clamp_min(0)).mean(0)
    if weights is not None:
        first, second = first * weights, None if second is None else second * weights
    return first, last, second


def best_paths(first, last, second, steps):
    """For each n in steps, the candidate indices (starting at 0) of the n-step path with the least summed step
    error (each path then takes its last step to sigma 0), and that error."""
    K = len(last)
    out = {}
    for n in steps:
        check(isinstance(n, int) and 1 <= n <= K, f"steps must be 1..{K} (the candidate grid), got {n}", "steps")
    top = max(steps)
    # cost[m]: least error of m steps ending at (previous, current) [K, K] (order 2) or at current [K] (order 1)
    if second is None:
        cost, back = [torch.full((K,), math.inf, dtype=torch.float64)], [None]
        cost[0][0] = 0.0
        for m in range(1, top):
            tot = cost[-1][:, None] + first  # [i, j]
            val, arg = tot.min(0)
            cost.append(val), back.append(arg)
    else:
        start = torch.full((K, K), math.inf, dtype=torch.float64)
        start[0, 1:] = first[0, 1:]  # the first step is first order (from candidate 0)
        cost, back = [None, start], [None, None]
        for m in range(2, top):
            tot = cost[-1][:, :, None] + second  # [k, i, j]
            val, arg = tot.min(0)  # [i, j]: best previous k
            cost.append(val), back.append(arg)
    for n in steps:
        if n == 1:
            out[n] = ([0], float(last[0]))
            continue
        if second is None:
            total = cost[n - 1] + last
            i = int(total.argmin())
            err, path = float(total[i]), [i]
            for m in range(n - 1, 0, -1):
                path.append(int(back[m][path[-1]]))
        else:
            total = cost[n - 1] + last[None, :]
            k, i = divmod(int(total.argmin()), K)
            err, path = float(total[k, i]), [i, k]
            for m in range(n - 1, 1, -1):
                path.append(int(back[m][path[-1], path[-2]]))
        out[n] = (path[::-1], err)
    return out


def fit_grids(denoiser, model_config, steps, *, n: int = 256, candidates: int = 0, substeps: int = 2, order: int = 1,
              seed: int = 0, contraction: float = 0.0, batch_size: int = 128, device="cpu"):
    """Noise-level grids fitted to a model, one per step count: {steps: (sigmas (descending, ending in 0), summed
    (weighted) local error of its path)}. n: teacher trajectories (random classes for a conditional model);
    candidates: the fine grid's noise levels (Karras rho 7 over the model's range; 0: 64 or 4x the most steps,
    whichever is more); substeps: teacher Heun steps between candidates; order: the solver scored (1 Euler/DDIM,
    2 DPM-Solver++(2M)); contraction: how much a step's error counts less for landing at a high noise level
    (`contraction_weights`)."""
    steps = sorted({int(s) for s in steps})
    check(len(steps) > 0, "steps: give at least one step count", "steps")
    check(order in ORDERS, f"order must be 1 or 2, got {order}", "order")
    check(isinstance(n, int) and n >= 2, f"n must be at least 2, got {n}", "n")
    check(isinstance(substeps, int) and substeps >= 1, f"substeps must be at least 1, got {substeps}", "substeps")
    check(isinstance(contraction, (int, float)) and 0 <= contraction <= 2,
          f"contraction must be 0..2, got {contraction}", "contraction")
    K = candidates or max(64, 4 * max(steps))
    check(isinstance(K, int) and 2 <= K <= 512, f"candidates must be 2..512, got {K}", "candidates")
    grid = karras_sigmas(K, model_config.sigma_min, model_config.sigma_max)[:-1]
    labels = model_config.pick_labels(n, seed)
    seeds = sample_seeds(seed, n, stream=TUNE_STREAM)
    dim = math.prod(model_config.in_shape)
    batch_size = max(1, min(batch_size, int(2**28 // ((2 * K + 1) * dim * 8))))  # the teacher's states: <= 256 MB
    gram = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = slice(start, start + batch_size)
            D = denoiser if labels is None else guided(denoiser, labels[idx].to(device), 1.0,
                                                       model_config.num_classes)
            shape = (len(seeds[idx]), *model_config.in_shape)
            V = teacher(lambda x, s: D(x.to(device), s.to(device)).cpu(), shape, grid, substeps, seeds[idx])
            gram.append(V @ V.transpose(1, 2))
    first, last, second = step_errors(torch.cat(gram), grid, order,
                                      contraction_weights(grid, model_config.sigma_data, contraction))
    return {m: (grid[path].tolist() + [0.0], err) for m, (path, err) in best_paths(first, last, second, steps).items()}
