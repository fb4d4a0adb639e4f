"""Training objectives: a noise distribution over sigma and a weighting of the denoising error.

Every weighting is written on the x0 error ||D(x0 + sigma eps, sigma) - x0||^2, which makes it independent of
the parameterization: eps-MSE is 1/sigma^2, v-MSE (1 + sigma^2)/sigma^2, EDM (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, and min-SNR-gamma (Hang et al. 2023) min(SNR, gamma) with SNR = 1/sigma^2.
"""
from __future__ import annotations

import torch

from .errors import DiffusekitError
from .schedules import LogNormalSigma, VPTimestepSigma, vp_table

WEIGHTINGS = {
    "eps": lambda sigma, sigma_data, gamma: 1 / sigma**2,
    "v": lambda sigma, sigma_data, gamma: (1 + sigma**2) / sigma**2,
    "edm": lambda sigma, sigma_data, gamma: (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2,
    "min-snr": lambda sigma, sigma_data, gamma: torch.clamp(1 / sigma**2, max=gamma),
}


def noise_distribution(name: str, p_mean=-1.2, p_std=1.2, vp_schedule="linear"):
    if name == "lognormal":
        return LogNormalSigma(p_mean, p_std)
    if name == "vp":
        return VPTimestepSigma(vp_table(vp_schedule))
    raise DiffusekitError(f"unknown noise distribution {name!r}; choose lognormal or vp")


class DiffusionLoss:
    """loss(denoiser, x0, labels) -> per-sample loss; sigma and eps may be passed in (e.g. drawn once per
    global batch so that every data-parallel rank sees the same noise for the same sample)."""

    def __init__(self, noise, weighting="edm", sigma_data=0.5, gamma=5.0):
        if weighting not in WEIGHTINGS:
            raise DiffusekitError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        self.noise, self.weight, self.sigma_data, self.gamma = noise, WEIGHTINGS[weighting], sigma_data, gamma

    def draw(self, x0_shape, generator=None):
        return self.noise(x0_shape[0], generator), torch.randn(x0_shape, generator=generator)

    def __call__(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None):
        if sigma is None:
            sigma, eps = self.draw(x0.shape, generator)
        sigma, eps = sigma.to(x0.device), eps.to(x0.device)
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        err = (denoiser(x0 + s * eps, sigma, labels) - x0) ** 2
        return self.weight(sigma, self.sigma_data, self.gamma) * err.flatten(1).mean(1)
