"""Training objectives: a noise distribution over sigma and a weighting of the denoising error.

Every weighting is written on the x0 error ||D(x0 + sigma eps, sigma) - x0||^2, which makes it independent of
the parameterization: eps-MSE is 1/sigma^2, v-MSE (1 + sigma^2)/sigma^2, EDM (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, and min-SNR-gamma (Hang et al. 2023) min(SNR, gamma) with SNR = 1/sigma^2.

"likelihood" (Song et al. 2021, maximum-likelihood training) is the weight (ln sigma_max - ln sigma_min) / sigma^2
under log-uniform noise on [sigma_min, sigma_max]: the importance-sampled likelihood weighting, whose
per-dimension loss is an unbiased estimate of the ELBO's diffusion term (likelihood.py). Under other noise the
importance weights would integrate down to sigma = 0, where that term diverges, so it asks for log-uniform noise.
"""
from __future__ import annotations

import torch

from .errors import DiffusekitError
from .schedules import LogNormalSigma, LogUniformSigma, VPTimestepSigma, vp_table

WEIGHTINGS = {
    "eps": lambda sigma, sigma_data, gamma: 1 / sigma**2,
    "v": lambda sigma, sigma_data, gamma: (1 + sigma**2) / sigma**2,
    "edm": lambda sigma, sigma_data, gamma: (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2,
    "min-snr": lambda sigma, sigma_data, gamma: torch.clamp(1 / sigma**2, max=gamma),
    "likelihood": None,  # needs the noise distribution: see DiffusionLoss
}
NOISES = ("lognormal", "loguniform", "vp")


def noise_distribution(name: str, p_mean=-1.2, p_std=1.2, vp_schedule="linear", sigma_min=0.002, sigma_max=80.0):
    if name == "lognormal":
        return LogNormalSigma(p_mean, p_std)
    if name == "loguniform":
        return LogUniformSigma(sigma_min, sigma_max)
    if name == "vp":
        return VPTimestepSigma(vp_table(vp_schedule))
    raise DiffusekitError(f"unknown noise distribution {name!r}; choose one of {', '.join(NOISES)}")


class DiffusionLoss:
    """loss(denoiser, x0, labels) -> per-sample loss; sigma and eps may be passed in (e.g. drawn once per
    global batch so that every data-parallel rank sees the same noise for the same sample)."""

    def __init__(self, noise, weighting="edm", sigma_data=0.5, gamma=5.0):
        if weighting not in WEIGHTINGS:
            raise DiffusekitError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if weighting == "likelihood" and not isinstance(noise, LogUniformSigma):
            raise DiffusekitError("weighting likelihood needs log-uniform noise (noise loguniform)", "weighting", "noise")
        self.noise, self.sigma_data, self.gamma = noise, sigma_data, gamma
        self.weight = self._likelihood_weight if weighting == "likelihood" else WEIGHTINGS[weighting]

    def _likelihood_weight(self, sigma, sigma_data, gamma):
        return (self.noise.hi - self.noise.lo) / sigma**2

    def draw(self, x0_shape, generator=None):
        return self.noise(x0_shape[0], generator), torch.randn(x0_shape, generator=generator)

    def __call__(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None, augment_labels=None):
        if sigma is None:
            sigma, eps = self.draw(x0.shape, generator)
        sigma, eps = sigma.to(x0.device), eps.to(x0.device)
        s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
        aug = {} if augment_labels is None else {"augment_labels": augment_labels}
        err = (denoiser(x0 + s * eps, sigma, labels, **aug) - x0) ** 2
        return self.weight(sigma, self.sigma_data, self.gamma) * err.flatten(1).mean(1)
