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
OBJECTIVES = ("diffusion", "consistency")


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


class ConsistencyLoss:
    """Easy Consistency Tuning (ECT, Geng et al. 2024): loss(denoiser, x0, labels) -> per-sample loss that teaches D
    to map every point of a noising path to the same clean end, starting from a diffusion model's weights.

    For sigma = t it compares D(x0 + t eps, t) with the network's own output, without gradient, at the lower level
    r(t) = t (1 - q^-1 (1 + k sigmoid(-b t))) on the same eps (clean x0 where r <= 0), by the L2 norm over (t - r).
    At q = 4 (the default; ECT's second stage) r is 0 below t = 0.51, where the target is the clean x0 (the plain
    denoising error), and 3/4 of t far above; at q = 256 (ECT's one-hour recipe) r is within 2% of t everywhere, and
    the boundary D(x, t) -> x as t -> 0 comes from the preconditioning alone.
    Both outputs see the same dropout draws. (Taking the lower point by a teacher's ODE step instead, consistency
    distillation, tuned worse in a measured trial: docs/sampling.md.)"""

    def __init__(self, noise, q: float = 4.0, k: float = 8.0, b: float = 1.0):
        check_q(q)
        self.noise, self.q, self.k, self.b = noise, q, k, b

    draw = DiffusionLoss.draw

    def lower_level(self, t: torch.Tensor) -> torch.Tensor:
        return (t * (1 - (1 + self.k * torch.sigmoid(-self.b * t)) / self.q)).clamp(min=0)

    def __call__(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None, augment_labels=None):
        if sigma is None:
            sigma, eps = self.draw(x0.shape, generator)
        t, eps = sigma.to(x0.device), eps.to(x0.device)
        r = self.lower_level(t)
        shape = (-1, *([1] * (x0.ndim - 1)))
        aug = {} if augment_labels is None else {"augment_labels": augment_labels}
        devices = [x0.device] if x0.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):  # the same dropout draws as the online call
            r_safe = torch.where(r > 0, r, t)  # levels where r = 0 take x0 below; any positive level keeps D finite
            target = denoiser(x0 + r_safe.reshape(shape) * eps, r_safe, labels, **aug)
            target = torch.where((r > 0).reshape(shape), target, x0)
        out = denoiser(x0 + t.reshape(shape) * eps, t, labels, **aug)
        return (out - target).flatten(1).float().norm(dim=1) / (t - r)


class TeacherPathLoss:
    """Consistency distillation to the teacher's own ODE end: loss(denoiser, x0, labels) -> per-sample loss that
    teaches D(x_t, t) the clean end of the teacher's probability-flow path through x_t (a consistency function).

    `path(x_T, labels) -> (states, levels, end)` solves the teacher's ODE from pure noise x_T in k steps without
    gradient (samplers' deterministic few-step solver) and returns its k states, their levels and the clean end; one
    path teaches k of the batch, so a step costs the teacher one forward pass of the batch on top of the student's
    own. The data only lend their labels; eps gives the paths' starting noise. The error is the plain squared error
    (a pseudo-Huber norm was no better in a measured trial: docs/sampling.md)."""

    def __init__(self, noise, path, steps: int):
        self.noise, self.path, self.steps = noise, path, steps

    draw = DiffusionLoss.draw

    def __call__(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None, augment_labels=None):
        n = len(x0)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator)
        m = -(-n // self.steps)  # paths: ceil(n / k)
        path_labels = None if labels is None else labels[:m]
        with torch.no_grad():
            states, levels, end = self.path(eps[:m].to(x0.device), path_labels)
        k = len(states)
        take = lambda t: torch.stack(t, 1).flatten(0, 1)[:n]  # path-major: path j's k states, then path j + 1's
        x, t = take(states), take(levels)
        target = end.float().repeat_interleave(k, 0)[:n]
        lab = None if labels is None else path_labels.repeat_interleave(k, 0)[:n]
        return ((denoiser(x, t, lab).float() - target) ** 2).flatten(1).mean(1)


def check_q(q):
    if not (isinstance(q, (int, float)) and 1 < q < float("inf")):
        raise DiffusekitError(f"ct_q must be a finite number > 1, got {q}", "ct_q")
