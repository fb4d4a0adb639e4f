"""Gaussian mixtures: exact denoisers and log-densities at every noise level (the analytic ground truth).

For x0 ~ sum_k w_k N(mu_k, diag(s_k^2)) and x = x0 + sigma * eps, p_sigma is the mixture with variances
s_k^2 + sigma^2, and E[x0 | x] = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)).
"""
from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)  # [K, D]
        K, D = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 1 and stds.numel() == K:
            stds = stds[:, None]  # one isotropic std per component
        self.stds = stds.expand(K, D).clone()
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    @property
    def dim(self):
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None, return_components=False):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x = self.means[k] + self.stds[k] * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (x, k) if return_components else x

    def _component_log_probs(self, x, sigma):
        x = torch.as_tensor(x, dtype=torch.float64)
        var = self.stds**2 + torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1) ** 2  # [N|1, K, D]
        diff = x[:, None, :] - self.means[None]
        return (-0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1) + self.weights.log()), var, diff

    def log_prob(self, x, sigma=0.0):
        """log p_sigma(x) in nats, float64."""
        lp, _, _ = self._component_log_probs(x, sigma)
        return torch.logsumexp(lp, -1)

    def responsibilities(self, x, sigma=0.0):
        lp, _, _ = self._component_log_probs(x, sigma)
        return torch.softmax(lp, -1)

    def denoiser(self, x, sigma):
        """The exact D(x, sigma) = E[x0 | x_sigma = x], in x's dtype. sigma: scalar or [N]."""
        lp, var, diff = self._component_log_probs(x, sigma)
        r = torch.softmax(lp, -1)  # [N, K]
        post = self.means[None] + (self.stds**2 / var) * diff  # [N, K, D]
        return (r[..., None] * post).sum(1).to(torch.as_tensor(x).dtype)

    def posterior(self, M, y, sigma_y: float):
        """p(x0 | y) for y = M x0 + sigma_y n (one measurement y [m]): a mixture with full covariances,
        returned as (weights [K], means [K, D], covariances [K, D, D]) by the Gaussian conditioning formulas."""
        M = torch.as_tensor(M, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        S = torch.diag_embed(self.stds**2)  # [K, D, D]
        C = M @ S @ M.T + sigma_y**2 * torch.eye(len(M), dtype=torch.float64)  # cov of y per component
        G = S @ M.T @ torch.linalg.inv(C)  # [K, D, m] gains
        r = y - self.means @ M.T  # [K, m]
        logw = self.weights.log() - 0.5 * (torch.einsum("km,kmn,kn->k", r, torch.linalg.inv(C), r)
                                          + torch.logdet(C) + len(M) * math.log(2 * math.pi))
        means = self.means + torch.einsum("kdm,km->kd", G, r)
        covs = S - G @ M @ S
        return torch.softmax(logw, 0), means, covs

    def entropy_mc(self, n=200_000, seed=0):
        """Differential entropy in nats by Monte Carlo, with its standard error."""
        lp = self.log_prob(self.sample(n, torch.Generator().manual_seed(seed)))
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))


def gmm8(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Eight equal isotropic Gaussians on a circle: the `toy:gmm8` data set's exact density."""
    a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(torch.stack([radius * a.cos(), radius * a.sin()], 1), std)
