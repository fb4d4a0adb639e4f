"""Noise schedules: the one place for alpha_bar <-> sigma <-> logSNR, sampling grids and training noise.

Convention (docs/design.md): a noisy sample is ``x_sigma = x0 + sigma * eps``. A variance-preserving sample is
``x_vp = sqrt(alpha_bar) * x_sigma`` with ``alpha_bar = 1 / (1 + sigma**2)``; logSNR = -2 log(sigma).
"""
from __future__ import annotations

import bisect
import math

import torch

from .errors import DiffusekitError

# ---------------------------------------------------------------------------------------------------------
# Conversions (used by losses, wrappers and samplers alike)


def sigma_to_alpha_bar(sigma):
    return 1.0 / (1.0 + sigma**2)


def alpha_bar_to_sigma(alpha_bar):
    return ((1.0 - alpha_bar) / alpha_bar) ** 0.5


def sigma_to_logsnr(sigma):
    return -2.0 * torch.log(torch.as_tensor(sigma))


def logsnr_to_sigma(logsnr):
    return torch.exp(-0.5 * torch.as_tensor(logsnr))


# ---------------------------------------------------------------------------------------------------------
# Discrete VP tables (float64)


def vp_linear_alpha_bars(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM (Ho et al. 2020) linear betas; returns alpha_bar[t] for t = 0..T-1."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def vp_cosine_alpha_bars(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021 cosine schedule, betas clipped at max_beta (as diffusers' squaredcos_cap_v2)."""
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


VP_TABLES = {"linear": vp_linear_alpha_bars, "cosine": vp_cosine_alpha_bars}


def vp_table(name: str, T: int = 1000) -> torch.Tensor:
    if name not in VP_TABLES:
        raise DiffusekitError(f"unknown VP schedule {name!r}; choose one of {sorted(VP_TABLES)}")
    return VP_TABLES[name](T)


def sigma_to_timestep(sigma: torch.Tensor, alpha_bars: torch.Tensor | None = None, log_sigmas=None) -> torch.Tensor:
    """Fractional timestep t with sigma(t) = sigma, by linear interpolation of log(sigma) over the table.
    Pass the table's precomputed ``log_sigmas`` (increasing in t) to skip recomputing it on every call."""
    if log_sigmas is None:
        log_sigmas = torch.log(alpha_bar_to_sigma(alpha_bars.double()))
    if isinstance(sigma, float):  # one level (sampling): plain Python, no tensor ops
        table = log_sigmas.tolist() if torch.is_tensor(log_sigmas) else log_sigmas
        ls = min(max(math.log(sigma), table[0]), table[-1])
        i = min(max(bisect.bisect_left(table, ls), 1), len(table) - 1)
        return i - 1 + (ls - table[i - 1]) / (table[i] - table[i - 1])
    ls = torch.log(torch.as_tensor(sigma, dtype=torch.float64)).clamp(log_sigmas[0], log_sigmas[-1])
    idx = torch.searchsorted(log_sigmas, ls.reshape(-1)).clamp(1, len(log_sigmas) - 1)
    lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
    w = (ls.reshape(-1) - lo) / (hi - lo)
    return (idx - 1 + w).reshape(ls.shape)


# ---------------------------------------------------------------------------------------------------------
# Sampling grids: descending sigmas ending in 0 (float64; samplers cast as needed)


def _append_zero(s: torch.Tensor) -> torch.Tensor:
    return torch.cat([s, s.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022, eq. 5) rho-spaced grid of n sigmas, plus a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def loguniform_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)))


def vp_timesteps(T: int, n: int, spacing: str = "leading", offset: int = 0) -> torch.Tensor:
    """The integer timesteps diffusers' DDIM/DDPM schedulers visit (descending), for their `timestep_spacing`."""
    if spacing == "leading":
        ts = torch.arange(0, n, dtype=torch.float64) * (T // n) + offset
    elif spacing == "trailing":
        ts = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)) - 1
        ts = ts.flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round()
    else:
        raise DiffusekitError(f"unknown timestep spacing {spacing!r}; choose leading, trailing or linspace")
    return ts.flip(0).long()


def timestep_sigmas(alpha_bars: torch.Tensor, timesteps) -> torch.Tensor:
    """Sigmas at given integer timesteps (e.g. a diffusers scheduler's), plus a final 0 (alpha_bar = 1)."""
    ts = torch.as_tensor(timesteps).long()
    return _append_zero(alpha_bar_to_sigma(alpha_bars.double()[ts]))


def vp_uniform_sigmas(alpha_bars: torch.Tensor, n: int) -> torch.Tensor:
    """n sigmas uniform in continuous time t in [T-1, 0] (fractional timesteps), plus a final 0."""
    t = torch.linspace(len(alpha_bars) - 1, 0, n, dtype=torch.float64)
    log_sigmas = torch.log(alpha_bar_to_sigma(alpha_bars.double()))
    i = t.floor().long().clamp(max=len(alpha_bars) - 2)
    w = t - i
    return _append_zero(torch.exp((1 - w) * log_sigmas[i] + w * log_sigmas[i + 1]))


GRIDS = ("karras", "loguniform", "vp", "timesteps")
# a model's own grids (fitted by `tune.fit_grids`, one per step count): "tuned" uses the one for the steps asked,
# "auto" (the default) uses it where there is one and nothing narrows the range, else karras
MODEL_GRIDS = ("auto", "tuned")


def sampling_sigmas(grid: str, n: int, sigma_min: float, sigma_max: float, alpha_bars=None, rho: float = 7.0,
                    spacing: str = "leading", offset: int = 0):
    """A descending grid of n noise levels (n network evaluations for a first-order sampler) ending in 0. "vp" and
    "timesteps" need the model's VP table (alpha_bars): uniform in continuous time, or the integer timesteps a
    diffusers DDIM/DDPM scheduler visits (its timestep spacing and steps offset)."""
    if not (isinstance(n, int) and n >= 1):
        raise DiffusekitError(f"steps must be at least 1, got {n}", "steps")
    if grid == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    if grid == "loguniform":
        return loguniform_sigmas(n, sigma_min, sigma_max)
    if grid in ("vp", "timesteps"):
        if alpha_bars is None:
            raise DiffusekitError(f"the {grid!r} grid needs a model trained on a VP table", "grid")
        if grid == "timesteps":
            return timestep_sigmas(alpha_bars, vp_timesteps(len(alpha_bars), n, spacing, offset))
        return vp_uniform_sigmas(alpha_bars, n)
    raise DiffusekitError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}", "grid")


def sigma_grid(model_config, steps: int, grid: str = "karras", rho=None, sigma_min=None, sigma_max=None,
               tuned: dict | None = None):
    """The sampling grid for a model (its ModelConfig): `steps` sigmas within its training range (or [sigma_min,
    sigma_max] where given, which must lie inside it), plus 0. rho: the Karras spacing (7 when not given). tuned: the
    model's fitted grids {steps: sigmas}, read by the grids "tuned" and "auto" (see `grid_name`)."""
    grid = grid_name(grid, steps, tuned, rho, sigma_min, sigma_max)
    if grid == "tuned":
        return torch.tensor(tuned[steps], dtype=torch.float32)
    if rho is not None and grid != "karras":
        raise DiffusekitError(f"rho is the spacing of the karras grid; the {grid} grid takes none", "rho")
    if (sigma_min is not None or sigma_max is not None) and grid in ("vp", "timesteps"):
        raise DiffusekitError(f"the {grid} grid is the model's own timestep range; it takes no sigma_min / sigma_max",
                              "sigma_min", "sigma_max")
    rho = 7.0 if rho is None else rho
    lo = model_config.sigma_min if sigma_min is None else sigma_min
    hi = model_config.sigma_max if sigma_max is None else sigma_max
    tol = 1e-6 * model_config.sigma_min  # the range as printed below may be rounded
    if not (model_config.sigma_min - tol <= lo < hi <= model_config.sigma_max * (1 + 1e-6)):
        raise DiffusekitError(f"need {model_config.sigma_min:.6g} <= sigma_min < sigma_max <= "
                              f"{model_config.sigma_max:.6g} (the model's training range), got sigma_min {lo:g}, "
                              f"sigma_max {hi:g}", "sigma_min", "sigma_max")
    if not (rho > 0 and math.isfinite(rho)):
        raise DiffusekitError(f"rho must be a finite number > 0, got {rho}", "rho")
    sched = model_config.scheduler or {}
    return sampling_sigmas(grid, steps, max(lo, model_config.sigma_min), min(hi, model_config.sigma_max),
                           alpha_bars=model_config.alpha_bars(), rho=rho,
                           spacing=sched.get("timestep_spacing", "leading"), offset=sched.get("steps_offset", 0))


def grid_name(grid: str, steps: int, tuned: dict | None, rho=None, sigma_min=None, sigma_max=None) -> str:
    """The grid a request resolves to: "auto" is "tuned" where the model has a fitted grid for these steps and no
    rho, sigma_min or sigma_max reshapes it, else "karras"; "tuned" without one is an error."""
    have = bool(tuned) and steps in tuned
    if grid == "auto":
        return "tuned" if have and rho is None and sigma_min is None and sigma_max is None else "karras"
    if grid == "tuned":
        if not have:
            fitted = ", ".join(map(str, sorted(tuned or {}))) or "none"
            raise DiffusekitError(f"the model has no tuned grid for {steps} steps (tuned: {fitted}); run diffusekit "
                                  f"tune-steps RUN --steps {steps}", "grid")
        if rho is not None or sigma_min is not None or sigma_max is not None:
            raise DiffusekitError("a tuned grid is fixed: it takes no rho, sigma_min or sigma_max", "grid")
    return grid


# ---------------------------------------------------------------------------------------------------------
# Training noise distributions: callables (n, generator) -> sigma of shape [n]


class LogNormalSigma:
    """EDM training noise: ln(sigma) ~ N(P_mean, P_std^2)."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.exp(self.p_mean + self.p_std * torch.randn(n, generator=generator))


class LogUniformSigma:
    """ln(sigma) ~ U[ln sigma_min, ln sigma_max]: the importance distribution that makes the likelihood weighting
    (Song et al. 2021) a constant weight on the eps error (see likelihood.py)."""

    def __init__(self, sigma_min: float, sigma_max: float):
        self.lo, self.hi = math.log(sigma_min), math.log(sigma_max)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.exp(self.lo + (self.hi - self.lo) * torch.rand(n, generator=generator))


class VPTimestepSigma:
    """DDPM training noise: t ~ U{0..T-1} on an alpha_bar table, sigma = sigma(t)."""

    def __init__(self, alpha_bars: torch.Tensor):
        self.sigmas = alpha_bar_to_sigma(alpha_bars.double()).float()

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sigmas[torch.randint(0, len(self.sigmas), (n,), generator=generator)]
