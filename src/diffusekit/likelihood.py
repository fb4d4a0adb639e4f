"""Likelihood, the variational bound, and encoding, all through the denoiser D(x, sigma) (docs/design.md).

Probability-flow ODE, integrated in s = ln(sigma) where its scale is even:

    dx/ds = x - D(x, sigma)                       (sigma * dx/dsigma, samplers.ode_derivative)
    ln p_min(x(s_min)) = ln N(x(s_max); 0, sigma_max^2 I) + int_{s_min}^{s_max} (d - tr dD/dx) ds

(the instantaneous change of variables of Chen et al. 2018 / Song et al. 2021). The trace is exact (one
backward pass per dimension) for small d, else Hutchinson's estimator with Rademacher or Gaussian probes that
stay fixed along the path. The state is integrated in float64 by an adaptive Dormand-Prince 5(4) solver.

ELBO (Kingma et al. 2021, "Variational diffusion models", continuous time, written in sigma: SNR = 1/sigma^2):

    -ln p(x) <= d/2 ln(2 pi e sigma_min^2)                    reconstruction, Gaussian decoder at sigma_min
                + int ||x - D(x + sigma eps, sigma)||^2 / sigma^2 d ln(sigma)   diffusion loss
                + ||x||^2 / (2 sigma_max^2)                   prior KL to N(0, sigma_max^2 I)

estimated with levels stratified uniformly in ln(sigma). The same integrand with weight 1/sigma^2 on the
x0 error is the likelihood-weighted training loss (losses.py, weighting "likelihood").

Units. Everything above is a density in model space. `to_data_units` turns it into the user's units: for vectors
the codec's standardization is undone (its log-Jacobian); 8-bit images are uniformly dequantized within
their level's bin (width 2/255 in model space, centred on the level) and reported as the discrete-data
bound of score_sde: bits/dim = NLL / (d ln 2) + log2(127.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction as Fr

import torch

from .config import Config, check, check_choice
from .errors import DiffusekitError
from .precond import unconditional
from .runtime import gather, map_batches, shard
from .masked import masked_nll
from .samplers import PerSampleNoise, ode_derivative
from .schedules import karras_sigmas

# ---------------------------------------------------------------------------------------------------------
# Dormand-Prince 5(4), with its 4th-order embedded error estimate and first-same-as-last reuse

_A = [[], [Fr(1, 5)], [Fr(3, 40), Fr(9, 40)], [Fr(44, 45), Fr(-56, 15), Fr(32, 9)],
      [Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)],
      [Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)],
      [Fr(35, 384), 0, Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84)]]
_C = [0, Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), 1, 1]
_B4 = [Fr(5179, 57600), 0, Fr(7571, 16695), Fr(393, 640), Fr(-92097, 339200), Fr(187, 2100), Fr(1, 40)]
_E = [float(b - b4) for b, b4 in zip(_A[6] + [0], _B4)]  # 5th minus 4th order weights
_A = [[float(a) for a in row] for row in _A]
_C = [float(c) for c in _C]


def check_tolerances(rtol: float, atol: float):
    if not (1e-12 <= rtol <= 0.1 and 1e-12 <= atol <= 0.1):
        raise DiffusekitError(f"tolerances must be in [1e-12, 0.1] (float64 cannot do better, looser is not an ODE "
                              f"solve), got rtol {rtol}, atol {atol}")


def dopri5(f, y, s0: float, s1: float, rtol=1e-5, atol=1e-5, max_steps=10_000):
    """Integrate dy/ds = f(s, y, rows) from s0 to s1 (either direction) for a batch y [N, ...]. Each sample has its
    own step size, accepted when its RMS scaled error is <= 1, so its result does not depend on the rest of the
    batch; f sees only the samples still moving: their times s [M], states y [M, ...] and batch indices rows [M]
    (to pick per-sample constants such as probes or labels). Returns (y(s1), network evaluations per sample [N])."""
    check_tolerances(rtol, atol)
    direction = 1.0 if s1 >= s0 else -1.0
    span = abs(s1 - s0)
    n = y.shape[0]
    y = y.clone()  # updated in place, row by row
    s = torch.full((n,), float(s0), dtype=torch.float64, device=y.device)
    h = torch.full_like(s, 0.02 * span)
    nfe = torch.ones_like(s)
    k1 = f(s, y, torch.arange(n, device=y.device))
    for _ in range(max_steps):
        rows = ((s - s0).abs() < span * (1 - 1e-12)).nonzero().squeeze(1)
        if len(rows) == 0:
            return y, nfe
        col = (len(rows),) + (1,) * (y.ndim - 1)  # per-sample scalars broadcast over a sample's values
        sm, ym = s[rows], y[rows]
        hm = torch.minimum(h[rows], span - (sm - s0).abs())  # the last step lands on s1
        step = (direction * hm).reshape(col)
        ks = [k1[rows]]
        for i in range(1, 7):
            yi = ym + step * sum(a * k for a, k in zip(_A[i], ks) if a)
            ks.append(f(sm + direction * _C[i] * hm, yi, rows))
        nfe[rows] += 6
        err = step * sum(e * k for e, k in zip(_E, ks) if e)
        scale = atol + rtol * torch.maximum(ym.abs(), yi.abs())  # stage 7 is the 5th-order solution (FSAL)
        norm = (err / scale).pow(2).flatten(1).mean(1).sqrt()
        if not torch.isfinite(norm).all():
            raise DiffusekitError("the ODE produced NaN or infinite values (is the model's checkpoint sound?)")
        ok = norm <= 1
        accepted = rows[ok]
        s[accepted] = sm[ok] + direction * hm[ok]
        y[accepted], k1[accepted] = yi[ok], ks[6][ok]
        h[rows] = hm * (0.9 * (norm + 1e-16) ** -0.2).clamp(0.2, 5.0)
    raise DiffusekitError(f"the ODE solver needed more than {max_steps} steps; loosen rtol / atol", "rtol", "atol")


# ---------------------------------------------------------------------------------------------------------
# The probability-flow ODE in s = ln(sigma), with and without the divergence


def flow(denoiser, x, sigma_from: float, sigma_to: float, *, rtol=1e-5, atol=1e-5, dtype=torch.float32):
    """Carry x along the probability-flow ODE from noise level sigma_from to sigma_to (adaptive, float64 state).
    Returns (x at sigma_to in float64, network evaluations per sample [N])."""
    with torch.no_grad():
        return dopri5(lambda s, y, rows: y - denoiser(y.to(dtype), s.exp().to(dtype)).to(torch.float64),
                      x.to(torch.float64), math.log(sigma_from), math.log(sigma_to), rtol, atol)


def uniform(noise: PerSampleNoise, shape):
    """U[0, 1) draws from per-sample generators (the normal CDF of their Gaussian draws), float64."""
    return 0.5 * (1 + torch.erf(noise.randn(shape, dtype=torch.float64) / math.sqrt(2)))


def probes(shape, kind: str, count: int, noise: PerSampleNoise, device="cpu"):
    """Hutchinson probes [count, *shape] with E[v v^T] = I, drawn per sample (rank- and batch-independent)."""
    v = torch.stack([noise.randn(shape) for _ in range(count)]).to(device)
    if kind == "rademacher":
        return v.sign()
    if kind == "gaussian":
        return v
    raise DiffusekitError(f"unknown trace estimator {kind!r}; choose exact, rademacher or gaussian")


def ode_log_likelihood(denoiser, x, sigma_min: float, sigma_max: float, *, estimator="auto", n_probes=1,
                       noise: PerSampleNoise | None = None, labels=None, rtol=1e-5, atol=1e-5, dtype=torch.float32):
    """ln p(x) in nats per sample (model space, continuous density) by the probability-flow ODE.

    Returns a dict: logp [N], prior_logp [N], latent (x at sigma_max, float64), nfe (per sample).
    estimator: "exact" (d backward passes per evaluation), "rademacher" / "gaussian" (Hutchinson with n_probes
    probes per sample), "auto" (exact for d <= 32). labels: per-sample class labels [N] for a conditional
    denoiser D(x, sigma, labels), else it is called as D(x, sigma)."""
    n, d = x.shape[0], x[0].numel()
    if estimator == "auto":
        estimator = "exact" if d <= 32 else "rademacher"
    if estimator == "exact":
        vs = torch.eye(d, dtype=dtype, device=x.device).reshape(d, 1, *x.shape[1:]).expand(d, *x.shape)
    else:
        if n_probes < 1:
            raise DiffusekitError(f"probes must be at least 1, got {n_probes}", "probes")
        vs = probes(tuple(x.shape), estimator, n_probes, noise or PerSampleNoise(range(n)), x.device).to(dtype)

    def f(s, y, rows):
        xs = y[:, :d].reshape(len(rows), *x.shape[1:])
        with torch.enable_grad():
            xi = xs.to(dtype).detach().requires_grad_(True)
            sigma = s.exp().to(dtype)
            D = denoiser(xi, sigma) if labels is None else denoiser(xi, sigma, labels[rows])
            tr = torch.zeros(len(rows), dtype=torch.float64, device=x.device)
            for j, v in enumerate(vs[:, rows]):  # v^T (dD/dx) v, one vector-Jacobian product per probe
                (vjp,) = torch.autograd.grad(D, xi, v, retain_graph=j < len(vs) - 1)
                tr += (vjp * v).flatten(1).sum(1, dtype=torch.float64)
        if estimator != "exact":
            tr /= len(vs)
        drift = (xs - D.detach().to(torch.float64)).flatten(1)
        return torch.cat([drift, (d - tr)[:, None]], 1)  # d/ds of (x, int div f)

    y0 = torch.cat([x.flatten(1).to(torch.float64), torch.zeros(n, 1, dtype=torch.float64, device=x.device)], 1)
    y1, nfe = dopri5(f, y0, math.log(sigma_min), math.log(sigma_max), rtol, atol)
    z = y1[:, :d]
    prior = -0.5 * (z.pow(2).sum(1) / sigma_max**2 + d * math.log(2 * math.pi * sigma_max**2))
    return {"logp": prior + y1[:, d], "prior_logp": prior, "latent": z.reshape(x.shape), "nfe": nfe}


def elbo_nll(denoiser, x, sigma_min: float, sigma_max: float, *, n_levels=32, noise: PerSampleNoise | None = None,
             dtype=torch.float32):
    """The negative ELBO in nats per sample (model space): an upper bound on -ln p(x). Levels are stratified
    in ln(sigma) and, like eps, drawn per sample from `noise`."""
    if n_levels < 1:
        raise DiffusekitError(f"levels must be at least 1, got {n_levels}", "levels")
    n, d = x.shape[0], x[0].numel()
    noise = noise or PerSampleNoise(range(n))
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    x64 = x.to(torch.float64)
    total = torch.zeros(n, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for k in range(n_levels):
            u = (k + uniform(noise, (n,)).to(x.device)) / n_levels  # stratum k of [0, 1)
            sigma = torch.exp(lo + (hi - lo) * u)
            eps = noise.randn(tuple(x.shape)).to(x.device, torch.float64)
            xs = x64 + sigma.reshape(-1, *[1] * (x.ndim - 1)) * eps
            err = (x64 - denoiser(xs.to(dtype), sigma.to(dtype)).to(torch.float64)).pow(2).flatten(1).sum(1)
            total += err / sigma**2
    diffusion = (hi - lo) * total / n_levels
    recon = 0.5 * d * math.log(2 * math.pi * math.e * sigma_min**2)
    prior = x64.pow(2).flatten(1).sum(1) / (2 * sigma_max**2)
    return recon + diffusion + prior


# ---------------------------------------------------------------------------------------------------------
# Data units, whole data sets, and encoding

LEVEL_WIDTH = 2 / 255  # an 8-bit level's bin in model space ([-1, 1])
LIKELIHOOD_STREAM = 1  # sample_seeds stream: dequantization, probes and levels never reuse a sample's noise


def to_data_units(nll_model: torch.Tensor, codec, d: int) -> torch.Tensor:
    """Model-space NLL (nats) -> nats in the user's units: the 8-bit discrete bound for images (after
    dequantization), the density of the unstandardized values for vectors."""
    if codec.kind == "image":
        return nll_model - d * math.log(LEVEL_WIDTH)
    if codec.kind == "text":  # tokens: nats of the characters themselves
        return nll_model
    return nll_model - codec.log_det_scale()


def bits_per_dim(nats: torch.Tensor, d: int) -> torch.Tensor:
    return nats / (d * math.log(2))


def summarize(values: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error of the mean)."""
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else float("nan")


@dataclass
class NLLConfig(Config):
    """How to measure the NLL: method "ode" (exact, the probability-flow ODE: trace `estimator` auto | exact |
    rademacher | gaussian with `probes` per sample, solver tolerances rtol / atol) or "elbo" (the bound, `levels`
    noise levels per sample). Randomness (dequantization, probes, levels) is drawn per sample from `seed`."""
    method: str = "ode"
    estimator: str | None = None
    probes: int | None = None
    rtol: float | None = None
    atol: float | None = None
    levels: int | None = None
    seed: int = 0
    batch_size: int = 64
    dequantize: bool = True

    def validate(self):
        check_choice("method", self.method, ("ode", "elbo"))
        if self.method == "elbo":
            self.unused(("estimator", "probes", "rtol", "atol"), "is an option of the exact likelihood (method ode)",
                        "method")
        else:
            self.unused(("levels",), "is an option of the ELBO (method elbo)", "method")
            check_choice("estimator", self.estimator or "auto", ("auto", "exact", "rademacher", "gaussian"))
            check_tolerances(*self.tolerances)
        check(self.probes is None or self.probes >= 1, f"probes must be at least 1, got {self.probes}", "probes")
        check(self.levels is None or self.levels >= 1, f"levels must be at least 1, got {self.levels}", "levels")
        check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be >= 0, got {self.seed}", "seed")

    @property
    def tolerances(self):
        return (1e-5 if self.rtol is None else self.rtol), (1e-5 if self.atol is None else self.atol)


def nll(denoiser, model_config, codec, x, config: NLLConfig, *, labels=None, device="cpu", progress=False, start=0):
    """Per-sample NLL of model-space data x ([N, *in_shape]) in the user's units.

    Returns {"nats": [N], "bits_per_dim": [N], "nfe": [N]} in sample order; sharded over torchrun ranks and gathered.
    A sample's value does not depend on the batch size or the number of processes (its randomness is its own, and
    the adaptive solver steps each sample on its own; only floating-point rounding in batched network calls differs).
    start: the index of x[0] in a longer stream scored in parts (its probes are that sample's).
    Images without `dequantize`: the continuous density of the 0..255 pixel values (the same change of variables,
    no bound)."""
    c = config
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DiffusekitError("data contain NaN or infinite values")
    if codec.kind == "vector":
        codec.log_det_scale()  # before any work: a codec with no density in data units says so here
    n, d = x.shape[0], x[0].numel()
    rtol, atol = c.tolerances
    mine, rank, world = shard(n)

    def batch(idx, seeds):
        if codec.kind == "text":  # masked diffusion's bound, on stratified masking levels
            levels = c.levels or 32
            lab = None if labels is None else labels[idx].to(device)
            return {"nats": masked_nll(denoiser, x[idx].to(device), levels, seeds, lab).cpu().double(),
                    "nfe": torch.full((len(idx),), float(levels), dtype=torch.float64)}
        noise = PerSampleNoise(seeds)
        xb = x[idx].to(device)
        if c.dequantize and codec.kind == "image":
            xb = xb + (uniform(noise, tuple(xb.shape)).to(device, xb.dtype) - 0.5) * LEVEL_WIDTH
        lab = None if labels is None else labels[idx].to(device)
        D = unconditional(denoiser, model_config, lab)
        if c.method == "ode":  # the solver drops finished samples, so it hands the labels over row by row
            r = ode_log_likelihood(D if lab is None else denoiser, xb, model_config.sigma_min, model_config.sigma_max,
                                   estimator=c.estimator or "auto", n_probes=c.probes or 1, noise=noise, labels=lab,
                                   rtol=rtol, atol=atol)
            nats, nfe = -r["logp"], r["nfe"].cpu()
        else:
            levels = c.levels or 32
            nats = elbo_nll(D, xb, model_config.sigma_min, model_config.sigma_max, n_levels=levels, noise=noise)
            nfe = torch.full((len(idx),), float(levels))
        return {"nats": to_data_units(nats.cpu(), codec, d).double(), "nfe": nfe.double()}

    vals = map_batches(batch, n, c.batch_size, seed=c.seed, stream=LIKELIHOOD_STREAM, indices=mine,
                       desc=f"nll ({c.method})", progress=progress and rank == 0, start=start)
    out = gather(vals, mine, n, world)  # vals None: this process has no samples
    out["bits_per_dim"] = bits_per_dim(out["nats"], d)
    return out


@dataclass
class FlowConfig(Config):
    """How to carry data to noise and back: method "ode" (adaptive probability-flow ODE, tolerances rtol / atol;
    invertible to its tolerance) or "ddim" (Euler steps on a Karras grid of `steps` levels: fast, with an O(1/steps)
    round-trip error)."""
    method: str = "ode"
    steps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    batch_size: int = 256

    def validate(self):
        check_choice("method", self.method, ("ode", "ddim"))
        if self.method == "ode":
            self.unused(("steps",), "is for method ddim; the adaptive ODE takes rtol / atol", "method", "rtol", "atol")
            check_tolerances(*self.tolerances)
        else:
            self.unused(("rtol", "atol"), "is for method ode; DDIM takes steps", "method", "steps")
            check(self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps}", "steps")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size must be at least 1, got {self.batch_size}", "batch_size")

    tolerances = NLLConfig.tolerances

    @property
    def options(self) -> dict:
        """The keywords of `encode` / `decode`."""
        return {"method": self.method, "steps": self.steps or 50, "rtol": self.tolerances[0],
                "atol": self.tolerances[1]}


def encode(denoiser, x, sigma_min: float, sigma_max: float, *, method="ode", steps=50, rtol=1e-5, atol=1e-5):
    """Data (model space, read as the state at sigma_min) -> latent noise, scaled to unit variance
    (z = x(sigma_max) / sigma_max, so decoding N(0, I) draws samples). method: "ode" (adaptive probability-flow
    ODE, invertible to its tolerance) or "ddim" (DDIM inversion on a Karras grid of `steps` levels: fast, with an
    O(1/steps) round-trip error). Returns (z float32, mean network evaluations per sample)."""
    if method == "ode":
        z, nfe = flow(denoiser, x, sigma_min, sigma_max, rtol=rtol, atol=atol)
        nfe = float(nfe.mean())
    else:
        z, nfe = _ddim(denoiser, x, _grid(steps, sigma_min, sigma_max).flip(0)), steps
    return (z / sigma_max).float(), nfe


def decode(denoiser, z, sigma_min: float, sigma_max: float, *, method="ode", steps=50, rtol=1e-5, atol=1e-5):
    """Latent noise (unit variance) -> data at sigma_min (model space): the inverse of `encode`."""
    if not torch.isfinite(z).all():
        raise DiffusekitError("latents contain NaN or infinite values")
    x = z.to(torch.float64) * sigma_max
    if method == "ode":
        x, nfe = flow(denoiser, x, sigma_max, sigma_min, rtol=rtol, atol=atol)
        nfe = float(nfe.mean())
    else:
        x, nfe = _ddim(denoiser, x, _grid(steps, sigma_min, sigma_max)), steps
    return x.float(), nfe


def _grid(steps, sigma_min, sigma_max):
    if steps < 1:
        raise DiffusekitError(f"steps must be at least 1, got {steps}", "steps")
    return karras_sigmas(steps + 1, sigma_min, sigma_max)[:-1].to(torch.float64)  # sigma_max ... sigma_min


def _ddim(denoiser, x, sigmas):
    """Euler steps of the probability-flow ODE along `sigmas` (DDIM); ascending sigmas = DDIM inversion, which
    evaluates D at the current point in place of the unknown next one."""
    x = x.to(torch.float64)
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            D = denoiser(x.float(), x.new_tensor(s, dtype=torch.float32)).to(torch.float64)
            x = x + (s_next - s) * ode_derivative(x, s, D)
    return x
