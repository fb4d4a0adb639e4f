"""Samplers: plain functions ``sample_*(denoiser, x, sigmas, *, temperature, generator, callback, **knobs) -> x``.

``x`` is the state at ``sigmas[0]`` and ``sigmas`` is descending and ends in 0. ``denoiser(x, sigma)`` is
D(x, sigma) in sigma space (docs/design.md); condition it by wrapping (e.g. ``precond.guided``).

Temperature (one meaning everywhere): it scales every Gaussian draw made while sampling -- the starting noise
(drawn by ``generate``) and any noise a sampler injects. 1 samples the model's distribution, 0 is fully
deterministic (and identical for every seed), above 1 is more random. ``eta`` / ``churn`` choose how
stochastic the path is, not what it samples at temperature 1.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import Config, check, check_choice
from .errors import DiffusekitError
from .precond import guided
from .runtime import map_batches
from .schedules import GRIDS, MODEL_GRIDS, sigma_grid

# ---------------------------------------------------------------------------------------------------------
# The probability-flow ODE, written once


def ode_derivative(x, sigma, denoised):
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022, eq. 3 with sigma(t) = t)."""
    return (x - denoised) / sigma


def score(x, sigma, denoised):
    """grad_x log p_sigma(x) from the denoiser (Tweedie)."""
    return (denoised - x) / sigma**2


# ---------------------------------------------------------------------------------------------------------
# Noise: per-sample generators make a seed give the same sample whatever the batch size


class PerSampleNoise:
    """One torch.Generator per sample (seeds[i] drives sample i and nothing else)."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def randn(self, shape, dtype=torch.float32, device="cpu"):
        if shape[0] != len(self.generators):
            raise ValueError(f"batch of {shape[0]} but {len(self.generators)} per-sample generators")
        return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype) for g in self.generators]).to(device)

    def rand(self, shape, dtype=torch.float64, device="cpu"):
        """U[0, 1) draws, sample i's from its generator."""
        if shape[0] != len(self.generators):
            raise ValueError(f"batch of {shape[0]} but {len(self.generators)} per-sample generators")
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype) for g in self.generators]).to(device)


def randn_like(x, generator=None):
    if generator is None:
        return torch.randn_like(x)
    if hasattr(generator, "randn"):
        return generator.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _denoise(denoiser, x, sigma: float):
    # one noise level for the batch, as a 0-dim tensor in x's dtype (broadcasts in user-written denoisers too)
    return denoiser(x, x.new_tensor(sigma))


def _report(callback, i, x, sigma, sigma_next, denoised):
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def _floats(sigmas):
    return [float(s) for s in torch.as_tensor(sigmas).reshape(-1)]


# ---------------------------------------------------------------------------------------------------------
# Samplers


def _sample_edm(denoiser, x, sigmas, temperature, generator, callback, churn, s_tmin, s_tmax, s_noise, second_order):
    # EDM Algorithm 2 (Karras et al. 2022); second_order=False is its Euler variant.
    s = _floats(sigmas)
    n = len(s) - 1
    for i in range(n):
        sigma, sigma_next = s[i], s[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * temperature * randn_like(x, generator)
        denoised = _denoise(denoiser, x, sigma_hat)
        d = ode_derivative(x, sigma_hat, denoised)
        x_next = x + (sigma_next - sigma_hat) * d
        if second_order and sigma_next > 0:
            d2 = ode_derivative(x_next, sigma_next, _denoise(denoiser, x_next, sigma_next))
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + d2)
        _report(callback, i, x, sigma_hat, sigma_next, denoised)
        x = x_next
    return x


def sample_euler(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None,
                 churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler on the probability-flow ODE (optionally with EDM churn). One network call per step."""
    return _sample_edm(denoiser, x, sigmas, temperature, generator, callback, churn, s_tmin, s_tmax, s_noise, False)


def sample_heun(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None,
                churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """EDM Heun (2nd order), with churn. 2 network calls per step, 1 on the last."""
    return _sample_edm(denoiser, x, sigmas, temperature, generator, callback, churn, s_tmin, s_tmax, s_noise, True)


def sample_ddim(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None, eta=0.0):
    """DDIM (Song et al. 2021) in sigma space; eta=0 is Euler, eta=1 is ancestral DDPM sampling."""
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = _denoise(denoiser, x, sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        # DDIM's sigma_t(eta) mapped to sigma space: the noise added back on the way to sigma_next
        sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
        x = torch.lerp(denoised, x, sigma_down / sigma)  # = denoised + sigma_down * ode_derivative(x, sigma, denoised)
        if sigma_up > 0:
            x = x + sigma_up * temperature * randn_like(x, generator)
    return x


def sample_ddpm(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None):
    """Ancestral sampling (Ho et al. 2020): the DDPM posterior q(x_prev | x, x0_hat), i.e. DDIM with eta = 1."""
    return sample_ddim(denoiser, x, sigmas, temperature=temperature, generator=generator, callback=callback, eta=1.0)


def sample_dpmpp_2m(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) with data prediction; first order on the first and last step."""
    return sample_dpmpp_2m_sde(denoiser, x, sigmas, temperature=temperature, generator=generator,
                               callback=callback, eta=0.0)


def sample_dpmpp_2m_sde(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None, eta=1.0,
                        s_tmin=0.0, s_tmax=float("inf")):
    """DPM-Solver++(2M) SDE (midpoint form); eta = 0 is the ODE solver DPM-Solver++(2M). Steps that start outside
    [s_tmin, s_tmax] are ODE steps (EDM's window for stochasticity; the whole range by default)."""
    return _sample_dpmpp(denoiser, x, sigmas, temperature, generator, callback, eta, 2, s_tmin, s_tmax)


def sample_dpmpp_3m_sde(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None, eta=1.0,
                        s_tmin=0.0, s_tmax=float("inf")):
    """DPM-Solver++(3M) SDE (the exponential-integrator multistep of Lu et al. 2022, third order from the third
    step on, as in k-diffusion); eta = 0 is the ODE solver DPM-Solver++(3M). s_tmin, s_tmax: as for 2M SDE."""
    return _sample_dpmpp(denoiser, x, sigmas, temperature, generator, callback, eta, 3, s_tmin, s_tmax)


def _sample_dpmpp(denoiser, x, sigmas, temperature, generator, callback, eta, order, s_tmin=0.0, s_tmax=float("inf")):
    # DPM-Solver++ multistep with data prediction, in lambda = -log(sigma): a first-order exponential-integrator step
    # (SDE form for eta > 0) plus corrections from the previous denoised outputs. order 2: the midpoint correction
    # (diffusers' solver_type "midpoint"); order 3: second order in the exponential-integrator form on the second
    # step (diffusers' "heun"), third order from the third. The last step (to sigma 0) returns the denoised output.
    s = _floats(sigmas)
    d_1 = d_2 = h_1 = h_2 = None  # the two previous denoised outputs and steps
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        denoised = _denoise(denoiser, x, sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        eta_h = eta * h if s_tmin <= sigma <= s_tmax else 0.0  # each step is exact for its own eta: it may vary
        phi = -math.expm1(-h - eta_h)
        x = (sigma_next / sigma) * math.exp(-eta_h) * x + phi * denoised
        if d_1 is not None and order == 2:
            x = x + phi * (0.5 / (h_1 / h)) * (denoised - d_1)
        elif d_1 is not None:
            phi_2 = 1 - phi / (h + eta_h)
            r0 = h_1 / h
            d1_0 = (denoised - d_1) / r0  # first divided difference, scaled to this step
            if d_2 is None:
                x = x + phi_2 * d1_0
            else:
                r1 = h_2 / h
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / (h + eta_h) - 0.5) * d2
        if eta_h > 0:
            x = x + sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * temperature * randn_like(x, generator)
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
    return x


def sample_sa_solver(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None, eta=1.0,
                     s_tmin=0.0, s_tmax=float("inf"), predictor_order=3, corrector_order=4):
    """SA-Solver (Xue et al. 2023): a stochastic Adams predictor-corrector for the SDE family of dpmpp-2m-sde (eta is
    the paper's tau^2; 1 is the reverse SDE, 0 the probability-flow ODE). The predictor extrapolates the last
    `predictor_order` denoised outputs; once the next output is in, the corrector redoes that step interpolating
    `corrector_order` outputs including the new one (with the same noise), so it costs no extra network call
    (0: no corrector). Orders are lowered on the first and last steps; noise only at sigma in [s_tmin, s_tmax].
    The paper's choice for unconditional models is orders 3 and 4; diffusers' SASolverScheduler matches this
    function state by state (a test)."""
    if predictor_order not in (1, 2, 3, 4) or corrector_order not in (0, 1, 2, 3, 4):
        raise DiffusekitError(f"sa-solver orders: predictor_order 1-4 and corrector_order 0-4, got {predictor_order} "
                              f"and {corrector_order}", "predictor_order", "corrector_order")
    predictor_order, corrector_order = int(predictor_order), int(corrector_order)
    s = _floats(sigmas)
    n = len(s) - 1
    lam = [-math.log(v) if v > 0 else math.inf for v in s]  # lambda = -ln sigma (half the logSNR)
    outputs, last = [], None  # denoised outputs so far; (x, noise, eta, corrector order) of the last predictor step
    for i in range(n):
        denoised = _denoise(denoiser, x, s[i])
        outputs.append(denoised)
        if s[i + 1] == 0:  # the step to sigma 0 returns the denoised output (first order there); correcting x first
            _report(callback, i, x, s[i], s[i + 1], denoised)  # would not change it, so the corrector is skipped
            x = denoised
            continue
        if last is not None and last[3] > 0:
            x0, z, eta0, q = last
            x = _sa_step(x0, outputs[-q:], lam[i - q + 1:i + 1], lam[i - 1], lam[i], eta0, z, temperature)
        _report(callback, i, x, s[i], s[i + 1], denoised)
        eta_i = eta if s_tmin <= s[i] <= s_tmax else 0.0
        z = randn_like(x, generator) if eta_i > 0 else None
        p = min(predictor_order, n - i, i + 1)
        last = (x, z, eta_i, min(corrector_order, n - i + 1, i + 2))
        x = _sa_step(x, outputs[-p:], lam[i - p + 1:i + 1], lam[i], lam[i + 1], eta_i, z, temperature)
        outputs = outputs[-max(predictor_order, corrector_order):]
    return x


_GAUSS_LEGENDRE_16 = np.polynomial.legendre.leggauss(16)  # nodes and weights on [-1, 1], computed once


def _sa_step(x, outputs, nodes, lam_s, lam_t, eta, z, temperature):
    # One step of the variance-controlled SDE from lambda_s to lambda_t in data prediction, the denoiser replaced by
    # the Lagrange polynomial through (nodes[j], outputs[j]) (oldest first): x_t = e^{-(1 + eta) h} x_s
    # + sum_j b_j outputs[j] + sigma_t sqrt(1 - e^{-2 eta h}) z, b_j = k int_{lam_s}^{lam_t} e^{k (lam - lam_t)} l_j(lam),
    # k = 1 + eta. Composite Gauss-Legendre (pieces short enough that the exponential is resolved to float64).
    h, k = lam_t - lam_s, 1.0 + eta
    pieces = max(1, math.ceil(k * h))
    u, w = _GAUSS_LEGENDRE_16
    edges = np.linspace(lam_s, lam_t, pieces + 1)
    lams = ((edges[:-1, None] + edges[1:, None]) / 2 + (edges[1:, None] - edges[:-1, None]) / 2 * u).ravel()
    ws = (np.repeat((edges[1:] - edges[:-1]) / 2, len(u)) * np.tile(w, pieces)) * k * np.exp(k * (lams - lam_t))
    b = [float(ws @ np.prod([(lams - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j]
                                + [np.ones_like(lams)], axis=0)) for j in range(len(nodes))]
    if len(nodes) == 2:  # the authors' (and diffusers') O(h^3) change to second order, which they found helps at few
        # steps; it shifts weight between the two outputs and keeps the order
        delta = k * (h * h / 2 - (h * k - 1 + math.exp(-k * h)) / k**2) / (nodes[1] - nodes[0])
        b[1] += delta
        b[0] -= delta
    out = math.exp(-k * h) * x + sum(bj * d for bj, d in zip(b, outputs))
    if z is not None:
        out = out + math.exp(-lam_t) * math.sqrt(-math.expm1(-2 * eta * h)) * temperature * z
    return out


def sample_consistency(denoiser, x, sigmas, *, temperature=1.0, generator=None, callback=None):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1) for a consistency model, whose D(x, sigma) is the
    clean end of x's probability-flow path: jump to it, then noise it afresh up to the next level. Exact at any number
    of steps for an exact consistency function; for a diffusion denoiser (a posterior mean) it is not a solver."""
    s = _floats(sigmas)
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i])
        _report(callback, i, x, s[i], s[i + 1], denoised)
        x = denoised if s[i + 1] == 0 else denoised + s[i + 1] * temperature * randn_like(denoised, generator)
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "dpmpp-3m-sde": sample_dpmpp_3m_sde,
    "sa-solver": sample_sa_solver,
    "consistency": sample_consistency,
}

# The default: stochastic, second order. On Fashion-MNIST it gave the lowest FCD at 10 and 20 network calls of every
# sampler (docs/sampling.md): its injected noise corrects part of the error an imperfect denoiser makes along the path (Karras et al. 2022, sec. 4).
DEFAULT_SAMPLER = "dpmpp-2m-sde"
# Below this many steps the SDE's injected noise is too coarse to be removed again, and its deterministic form (the
# probability-flow ODE by the same solver) wins: sampler "auto" (the default) picks by the step count.
SDE_MIN_STEPS = 10


def auto_sampler(steps: int) -> str:
    return DEFAULT_SAMPLER if steps >= SDE_MIN_STEPS else "dpmpp-2m"

# How a consistency model (a run distilled by `distill`) samples when not told otherwise: ECT's two steps
# (Geng et al. 2024), through the grid 80, 0.821, 0 (the karras grid with this sigma_min gives it: 1 step is 80, 0).
CONSISTENCY_SAMPLING = {"sampler": "consistency", "steps": 2, "sigma_min": 0.821}


# Vectors (tables, 2-D points): at the default steps the SDE's full noise (eta 1) smears their sharp low-dimensional
# modes; a little of it, on the grid fitted to the run when it is trained (`VECTOR_TUNING`), comes as close to the
# data as 500 steps of the SDE (docs/sampling.md). Images keep eta 1 on the karras grid, their best at 10-20 calls.
VECTOR_ETA = 0.15
# how a vector run's grid for the default steps is fitted when training ends, as it was measured (`tune.fit_grids`;
# order 2: the solver of the SDE's deterministic part, DPM-Solver++(2M); contraction: the steps' errors at high noise,
# which the rest of the flow partly undoes, count less, so the grid's last levels sit lower)
VECTOR_TUNING = {"n": 256, "order": 2, "seed": 0, "candidates": 0, "contraction": 0.5, "batch_size": 128}


# Images in fewer than SDE_MIN_STEPS calls: the probability-flow ODE by SA-Solver's Adams predictor-corrector (eta 0;
# its fourth-order corrector reuses the next call, so the order costs nothing), on a karras grid that ends at sigma
# 0.2 with more of its steps at low noise. The last call then denoises a level where it still shapes the image, not
# 0.002 where it is nearly the identity; measured against DPM-Solver++(2M) on the default grid in docs/sampling.md.
FEW_STEP_IMAGES = {"sampler": "sa-solver", "eta": 0.0}
FEW_STEP_GRID = {"sigma_min": 0.2, "rho": 10.0}


def sampling_defaults(objective: str, kind: str = "image", steps: int = 20, *, grid: str = "auto",
                      sigma_range: tuple = (0.0, math.inf)) -> dict:
    """The sampling options a model trained with this objective (train.TrainConfig.objective) on this kind of data
    takes by default at this many steps, beyond SampleConfig's. grid: the grid the request resolves to
    (`schedules.grid_name`): the few-step bounds of an image's karras grid apply to that grid only, and only where
    they lie in the model's sigma_range."""
    if objective == "consistency":
        return dict(CONSISTENCY_SAMPLING)
    if not isinstance(steps, int):
        return {}
    if auto_sampler(steps) == DEFAULT_SAMPLER:
        return {"sampler": DEFAULT_SAMPLER, "eta": VECTOR_ETA} if kind == "vector" else {}
    if kind != "image":
        return {}
    lo, hi = sigma_range
    fits = grid == "karras" and lo <= FEW_STEP_GRID["sigma_min"] < hi
    return {**FEW_STEP_IMAGES, **(FEW_STEP_GRID if fits else {})}


def ode_path(denoiser, model_config, eps, steps: int, labels=None):
    """The probability-flow path of a diffusion denoiser from pure noise eps * sigma_max by the default deterministic
    solver at `steps` (< SDE_MIN_STEPS) steps: its states (a list of `steps` tensors), their levels (one per sample)
    and its clean end. What a consistency model distilled from the denoiser learns to jump to (losses.TeacherPathLoss)."""
    check(steps < SDE_MIN_STEPS, f"ode_path takes fewer than {SDE_MIN_STEPS} steps (the deterministic defaults)")
    options = sampling_defaults("diffusion", model_config.kind, steps, grid="karras",
                                sigma_range=(model_config.sigma_min, model_config.sigma_max))
    fn = get_sampler(options.pop("sampler", auto_sampler(steps)))
    sigmas = sigma_grid(model_config, steps, "karras", options.pop("rho", None), options.pop("sigma_min", None))
    states, levels = [], []

    def keep(info):
        states.append(info["x"])
        levels.append(info["x"].new_full((len(eps),), info["sigma"]))
    D = denoiser if labels is None else (lambda x, sigma: denoiser(x, sigma, labels))
    end = fn(D, eps * float(sigmas[0]), sigmas, callback=keep, **options)
    return states, levels, end


def _knob_defaults(fn) -> dict:
    """A sampler's knobs: its keyword-only parameters beyond those every sampler takes, with their defaults."""
    common = ("temperature", "generator", "callback")
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in common}


# which knobs each sampler takes, read off the functions (the CLI's options and every check derive from this)
KNOBS = {name: _knob_defaults(fn) for name, fn in SAMPLERS.items()}
ALL_KNOBS = {k: v for knobs in KNOBS.values() for k, v in knobs.items()}


def check_knobs(name: str, knobs: dict):
    """A one-line error for a knob `name` does not take or a value it cannot use (docs/design.md: never ignored)."""
    get_sampler(name)
    bad = [k for k in knobs if k not in KNOBS[name]]
    if bad:
        raise DiffusekitError(f"sampler {name} takes no {', '.join(bad)} (it takes: {', '.join(KNOBS[name]) or 'none'})",
                              *bad)
    # s_tmax may be +inf (no upper limit, its default); everything else finite and >= 0
    wrong = [k for k, v in knobs.items() if not (isinstance(v, (int, float)) and v >= 0 and
                                                (math.isfinite(v) or (k == "s_tmax" and v == math.inf)))]
    if wrong:
        raise DiffusekitError(f"sampler knobs must be finite numbers >= 0, got "
                              f"{', '.join(f'{k} {knobs[k]}' for k in wrong)}", *wrong)
    if knobs.get("s_tmin", 0.0) > knobs.get("s_tmax", math.inf):
        raise DiffusekitError(f"s_tmin {knobs['s_tmin']:g} is above s_tmax {knobs['s_tmax']:g}: the noise window is "
                              f"empty", "s_tmin", "s_tmax")


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise DiffusekitError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}", "sampler")
    return SAMPLERS[name]


def steps_for_nfe(name: str, nfe: int) -> int:
    """Number of grid steps that spends about `nfe` network calls (Heun: 2 per step, 1 on the last)."""
    return max(1, (nfe + 1) // 2) if name == "heun" else nfe


def generate(denoiser, sampler, shape, sigmas, *, seeds, temperature=1.0, callback=None, device="cpu", **knobs):
    """Draw per-sample starting noise at sigmas[0] (scaled by temperature) and run `sampler`."""
    if temperature < 0 or not math.isfinite(temperature):
        raise DiffusekitError(f"temperature must be a finite number >= 0, got {temperature}", "temperature")
    if isinstance(sampler, str):
        sampler = get_sampler(sampler)
    s = torch.as_tensor(sigmas)
    if s.ndim != 1 or len(s) < 2 or s[-1] != 0 or not (s[:-1] > s[1:]).all():
        raise DiffusekitError("sigmas must be a strictly descending 1-D grid that ends in 0")
    noise = PerSampleNoise(seeds)
    x = noise.randn(shape, device=device) * (float(sigmas[0]) * temperature)
    return sampler(denoiser, x, sigmas, temperature=temperature, generator=noise, callback=callback, **knobs)


# ---------------------------------------------------------------------------------------------------------
# Sampling a model: the settings of one `sample` call, and the batched, seeded loop


class KnobOptions(Config):
    """A config with a `knobs` field: keywords that are knobs of a sampler (`churn=10`) go there."""

    @classmethod
    def from_options(cls, **options):
        """Settings given as keywords, a sampler's knobs among them; None means not given."""
        options = {k: v for k, v in options.items() if v is not None}
        knobs = {k: options.pop(k) for k in list(options) if k in ALL_KNOBS}
        return cls.from_dict({**options, "knobs": {**options.pop("knobs", {}), **knobs}})


@dataclass
class SampleConfig(KnobOptions):
    """How to sample: the sampler (auto: `auto_sampler` of the steps) and its knobs, the sigma grid (steps noise levels of `grid`: auto, the model's tuned
    grid for these steps where it has one, else karras; karras spacing rho; sigma_min / sigma_max narrow the model's
    range), temperature, seed, classifier-free guidance weight (1: none)."""
    sampler: str = "auto"
    steps: int = 20
    grid: str = "auto"
    rho: float | None = None
    sigma_min: float | None = None
    sigma_max: float | None = None
    temperature: float = 1.0
    seed: int = 0
    guidance: float = 1.0
    batch_size: int = 256
    knobs: dict = field(default_factory=dict)

    def validate(self):
        check_choice("sampler", self.sampler, ("auto", *SAMPLERS))
        check_choice("grid", self.grid, MODEL_GRIDS + GRIDS)
        check(isinstance(self.steps, int) and self.steps >= 1, f"steps must be at least 1, got {self.steps}", "steps")
        if self.sampler == "auto":
            self.sampler = auto_sampler(self.steps)
        check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be >= 0, got {self.seed}", "seed")
        check(self.temperature >= 0 and math.isfinite(self.temperature),
              f"temperature must be a finite number >= 0, got {self.temperature}", "temperature")
        check(self.guidance >= 0 and math.isfinite(self.guidance),
              f"guidance must be a finite number >= 0, got {self.guidance}", "guidance")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size must be at least 1, got {self.batch_size}", "batch_size")
        check_knobs(self.sampler, self.knobs)


def sample(denoiser, model_config, n: int, config: SampleConfig, *, labels=None, device="cpu", callback=None,
           progress=False, tuned: dict | None = None, start: int = 0):
    """n samples in model space ([n, *in_shape], on the CPU). labels: LongTensor [n] for a conditional model. Sample i
    is drawn from its own generator (seed, start + i): the same whatever the batch size, and drawn in parts (start:
    the index of the first) the same as at once. tuned: the model's fitted grids."""
    c = config
    check(isinstance(n, int) and n >= 1, f"n must be at least 1, got {n}", "n")
    check(c.guidance == 1.0 or model_config.num_classes > 0, "guidance needs a class-conditional model", "guidance")
    if model_config.kind == "text":  # tokens: the masked model's unmasking, `steps` of it
        from .masked import sample_tokens

        check(c.guidance == 1.0, "guidance is not implemented for text", "guidance")

        def unmask(idx, seeds):
            z = torch.full((len(idx), *model_config.in_shape), model_config.vocab, dtype=torch.long, device=device)
            return sample_tokens(denoiser, z, c.steps, seeds=seeds, temperature=c.temperature, callback=callback,
                                 labels=None if labels is None else labels[idx].to(device))

        return map_batches(unmask, n, c.batch_size, seed=c.seed, desc="sampling", progress=progress, start=start)
    fn = get_sampler(c.sampler)
    sigmas = sigma_grid(model_config, c.steps, c.grid, c.rho, c.sigma_min, c.sigma_max, tuned)

    def batch(idx, seeds):
        D = denoiser
        if labels is not None:
            D = guided(denoiser, labels[idx].to(device), c.guidance, model_config.num_classes)
        with torch.no_grad():
            return generate(D, fn, (len(idx), *model_config.in_shape), sigmas, seeds=seeds,
                            temperature=c.temperature, callback=callback, device=device, **c.knobs).float()

    return map_batches(batch, n, c.batch_size, seed=c.seed, desc="sampling", progress=progress, start=start)
