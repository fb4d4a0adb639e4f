"""Restoration with any trained model: degradation operators and methods that wrap the denoiser.

A measurement is y = A(x0) + sigma_y * n in model space (images in [-1, 1], so a noise sigma of s in [0, 1]
units is 2 s here). A linear operator gives ``A``, its adjoint ``At`` and ``gram_solve(z, alpha)`` =
(A A^T + alpha I)^+ z, from which the pseudo-inverse A^+ = A^T (A A^T)^+ and every method below follow; a new
operator plugs in by writing those three. Methods:

- ``rectified`` (DDNM, Wang et al. 2023): a denoiser D'(x, sigma) = D + K (y - A D) whose range-space part agrees
  with the measurement. Noiseless, K = A^+ (DDNM exactly). With noise, K = r^2 A^T (r^2 A A^T + sigma_y^2 I)^-1:
  the posterior-mean update under the Gaussian approximation N(D, r^2 I) of p(x0 | x_sigma) with
  r^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2) (as in Pi-GDM, Song et al. 2023), a per-singular-value
  (Wiener) trade-off between measurement and model like DDRM's. An approximation: on the analytic test it puts
  about 10% of the mass on a mixture component the measurement rules out. Any sampler runs it.
- ``repaint`` (Lugmayr et al. 2022): each step replaces the measured part by the measurement noised to the
  current level, then re-noises and repeats the step ``resample`` times so the two parts harmonize. A noisy
  measurement counts as a draw at its own noise level (DDRM's view), exact on the measured part.
- ``dps`` (Chung et al. 2023): D' = D - zeta sigma^2 grad_x ||y - A(D(x))||, the likelihood gradient of DPS in
  denoiser form; for any differentiable operator (it needs only ``A``). Any sampler runs it.
- ``tweedie``: for Gaussian denoising the posterior mean E[x0 | y] is D(y, sigma_y) exactly, one network call.
- ``posterior_sample``: for Gaussian denoising, y is a draw of x at sigma_y, so a stochastic sampler started
  there samples p(x0 | y).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .config import check, check_choice
from .errors import DiffusekitError
from .runtime import map_batches
from .samplers import KnobOptions, PerSampleNoise, check_knobs, generate, get_sampler, randn_like
from .schedules import GRIDS, MODEL_GRIDS, grid_name, sampling_sigmas, sigma_grid


class LinearOperator:
    """Subclasses define A, At and gram_solve; y has the shape A gives. noise_gain: 1 / (the singular value) when
    all singular values are equal, so that A^+ y carries noise sigma_y * noise_gain (None: they differ)."""

    noise_gain = None

    def A(self, x):
        raise NotImplementedError

    def At(self, y):
        raise NotImplementedError

    def gram_solve(self, z, alpha: float):
        """(A A^T + alpha I)^+ z."""
        raise NotImplementedError

    def pinv(self, y):
        return self.At(self.gram_solve(y, 0.0))

    def replace(self, x, y):
        """x with its range-space part set to what y says (x - A^+ A x + A^+ y)."""
        return x + self.pinv(y - self.A(x))

    def take(self, idx):
        """The operator for samples idx of a batch (per-sample operators override)."""
        return self

    def noisy_replace(self, x, y, sigma: float, sigma_y: float, eps):
        """x with its measured part set to y noised up to level sigma (y itself is a draw at level sigma_y / s for
        singular value s), in the directions where that level is below sigma (DDRM's rule); eps: N(0, I) like x."""
        s_y = sigma_y * (self.noise_gain or 0.0)
        if sigma <= s_y:
            return x
        return self.replace(x, y + math.sqrt(sigma**2 - s_y**2) * self.A(eps))

    @property
    def repaint_noisy(self):
        return self.noise_gain is not None


class Identity(LinearOperator):
    """Denoising: y = x + noise."""

    noise_gain = 1.0

    def A(self, x):
        return x

    At = A

    def gram_solve(self, z, alpha):
        return z / (1 + alpha)

    def replace(self, x, y):
        return y.clone()


class Mask(LinearOperator):
    """Inpainting: keep the pixels where mask is 1. mask: [N or 1, 1, H, W] of 0/1; y has x's shape, 0 elsewhere."""

    noise_gain = 1.0

    def __init__(self, mask: torch.Tensor):
        self.mask = mask.float()

    def A(self, x):
        return x * self.mask.to(x.device)

    At = A

    def gram_solve(self, z, alpha):
        return self.A(z) / (1 + alpha)

    def replace(self, x, y):  # exact: known pixels are copied, not recomputed
        return torch.where(self.mask.to(x.device).bool(), y, x)

    def take(self, idx):
        return self if len(self.mask) == 1 else Mask(self.mask[idx])


class AvgPool(LinearOperator):
    """Down-sampling by a factor f (mean of each f x f block); A A^T = I / f^2."""

    def __init__(self, factor: int):
        self.f = int(factor)
        self.noise_gain = float(self.f)

    def A(self, x):
        return F.avg_pool2d(x, self.f)

    def At(self, y):
        return y.repeat_interleave(self.f, -2).repeat_interleave(self.f, -1) / self.f**2

    def gram_solve(self, z, alpha):
        return z / (1 / self.f**2 + alpha)


def hw(size) -> tuple[int, int]:
    """An image size as (height, width): an int is a square."""
    return (size, size) if isinstance(size, int) else tuple(size)


class Blur(LinearOperator):
    """Convolution with a small kernel, periodic boundary (so A is diagonal in Fourier space and its SVD is exact)."""

    def __init__(self, kernel: torch.Tensor, size):
        k, (H, W) = torch.as_tensor(kernel, dtype=torch.float64), hw(size)
        if k.shape[0] > H or k.shape[1] > W:
            raise DiffusekitError(f"blur kernel {tuple(k.shape)} is larger than the {W}x{H} image")
        pad = torch.zeros(H, W, dtype=torch.float64)
        pad[:k.shape[0], :k.shape[1]] = k
        pad = torch.roll(pad, (-(k.shape[0] // 2), -(k.shape[1] // 2)), (0, 1))  # kernel centre at (0, 0)
        self.K = torch.fft.fft2(pad)  # complex128 [H, W]

    def _apply(self, x, filt):
        return torch.fft.ifft2(torch.fft.fft2(x.double()) * filt.to(x.device)).real.to(x.dtype)

    def A(self, x):
        return self._apply(x, self.K)

    def At(self, y):
        return self._apply(y, self.K.conj())

    repaint_noisy = True

    def noisy_replace(self, x, y, sigma, sigma_y, eps):
        # per frequency f: y_f / K_f is x0_f plus noise sigma_y / |K_f| (orthonormal FFT keeps white noise white)
        K = self.K.to(x.device)
        mag = K.abs()
        level = torch.where(mag > 1e-3, sigma_y / mag.clamp_min(1e-3), torch.full_like(mag, math.inf))
        use = level < sigma
        fx, fy, fe = (torch.fft.fft2(t.double(), norm="ortho") for t in (x, y, eps))
        target = fy / torch.where(use, K, torch.ones_like(K)) + (sigma**2 - level.clamp(max=sigma) ** 2).sqrt() * fe
        return torch.fft.ifft2(torch.where(use, target, fx), norm="ortho").real.to(x.dtype)

    def gram_solve(self, z, alpha):
        power = self.K.abs() ** 2
        inv = torch.where(power > 1e-10, 1 / (power + alpha), torch.zeros_like(power)) if alpha == 0 else 1 / (power + alpha)
        return self._apply(z, inv)


class Grey(LinearOperator):
    """RGB to grey (Rec. 601 weights, summing to 1 so model-space [-1, 1] maps to itself), for colourization."""

    w = (0.299, 0.587, 0.114)
    noise_gain = 1 / math.sqrt(sum(v * v for v in w))

    def A(self, x):
        return (x * x.new_tensor(self.w).view(1, 3, 1, 1)).sum(1, keepdim=True)

    def At(self, y):
        return y * y.new_tensor(self.w).view(1, 3, 1, 1)

    def gram_solve(self, z, alpha):
        return z / (sum(v * v for v in self.w) + alpha)


class Matrix(LinearOperator):
    """y = M x for vectors [N, D] (M: [m, D]); also the analytic tests' operator."""

    def __init__(self, M):
        self.M = torch.as_tensor(M, dtype=torch.float64)
        sv = torch.linalg.svdvals(self.M)
        sv = sv[sv > 1e-10 * sv.max()]
        if torch.allclose(sv, sv[0].expand_as(sv), rtol=1e-9):
            self.noise_gain = float(1 / sv[0])

    def A(self, x):
        return x @ self.M.T.to(x.dtype)

    def At(self, y):
        return y @ self.M.to(y.dtype)

    def gram_solve(self, z, alpha):
        G = self.M @ self.M.T + alpha * torch.eye(len(self.M), dtype=torch.float64)
        return (z.double() @ torch.linalg.pinv(G).T).to(z.dtype)


# ---------------------------------------------------------------------------------------------------------
# Specs the CLI parses


def gaussian_kernel(sigma: float, max_radius: int = 1 << 30) -> torch.Tensor:
    r = max(1, min(math.ceil(3 * sigma), max_radius))  # 3 sigma, cut to the image (the blur is periodic)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    k = torch.outer(g, g)
    return k / k.sum()


def parse_kernel(spec: str, size) -> Blur:
    """gaussian:SIGMA or box:SIZE, for images of size (height, width)."""
    m = re.fullmatch(r"(gaussian|box):([0-9.]+)", spec or "")
    try:
        v = float(m.group(2)) if m else None
    except ValueError:
        v = None
    if v is None or not math.isfinite(v):
        raise DiffusekitError(f"cannot parse kernel {spec!r}; use gaussian:SIGMA (e.g. gaussian:1.5) or box:SIZE (e.g. box:3)")
    if m.group(1) == "gaussian":
        if v <= 0:
            raise DiffusekitError(f"gaussian kernel sigma must be > 0, got {v:g}")
        return Blur(gaussian_kernel(v, (min(hw(size)) - 1) // 2), size)
    if v != int(v) or v < 1:
        raise DiffusekitError(f"box kernel size must be a whole number >= 1, got {v:g}")
    return Blur(torch.full((int(v), int(v)), 1.0 / v**2, dtype=torch.float64), size)


def parse_mask(spec: str, n: int, size, seed: int = 0) -> torch.Tensor:
    """A known-pixel mask [N or 1, 1, H, W] (1 = known) from box:S (centre S x S box missing),
    random:P (a fraction P of pixels missing, different per image, seeded), half[:left|right|top|bottom]
    (that half missing; default right), an image file whose nonzero pixels mark what to fill, or an array of that
    (H x W, or N x H x W for one mask per image; nonzero / True = fill). size: the images' (height, width)."""
    if not isinstance(spec, str):
        return _mask_array(spec, n, size)
    name, _, arg = spec.partition(":")
    H, W = hw(size)
    m = torch.ones(1, 1, H, W)
    if name == "box":
        try:
            s = int(arg)
        except ValueError:
            raise DiffusekitError(f"cannot parse mask {spec!r}; box needs a size, e.g. box:14") from None
        if not 1 <= s <= min(H, W):
            raise DiffusekitError(f"mask box:{s} must be between 1 and the image's smaller side {min(H, W)}")
        top, left = (H - s) // 2, (W - s) // 2
        m[..., top:top + s, left:left + s] = 0
    elif name == "random":
        try:
            p = float(arg)
        except ValueError:
            p = -1.0
        if not 0 < p < 1:
            raise DiffusekitError(f"cannot parse mask {spec!r}; random needs a missing fraction in (0, 1), e.g. random:0.7")
        g = torch.Generator().manual_seed(seed)
        m = (torch.rand(n, 1, H, W, generator=g) >= p).float()
    elif name == "half":
        side = arg or "right"
        sl = {"left": (..., slice(None), slice(0, W // 2)), "right": (..., slice(None), slice(W - W // 2, None)),
              "top": (..., slice(0, H // 2), slice(None)), "bottom": (..., slice(H - H // 2, None), slice(None))}
        if side not in sl:
            raise DiffusekitError(f"cannot parse mask {spec!r}; use half:left, half:right, half:top or half:bottom")
        m[sl[side]] = 0
    else:
        m = _mask_file(spec, size)
    if m.min() == 1:
        raise DiffusekitError(f"mask {spec!r} masks nothing: there is nothing to fill")
    if m.flatten(1).max(1).values.min() == 0:
        raise DiffusekitError(f"mask {spec!r} masks every pixel: nothing is known, use `diffusekit sample`")
    return m


def _mask_array(a, n: int, size) -> torch.Tensor:
    a, (H, W) = np.asarray(a), hw(size)
    if a.shape not in ((H, W), (n, H, W)):
        raise DiffusekitError(f"mask has shape {a.shape}; it must be {H} x {W} or {n} x {H} x {W} "
                              f"(nonzero = fill)", "mask")
    m = torch.from_numpy((a == 0).astype(np.float32))
    m = m[None, None] if m.ndim == 2 else m[:, None]
    if m.min() == 1 or m.flatten(1).max(1).values.min() == 0:
        raise DiffusekitError("mask masks nothing, or every pixel of an image: there must be something to fill and "
                              "something known", "mask")
    return m


def _mask_file(path: str, size) -> torch.Tensor:
    if not os.path.isfile(path):
        raise DiffusekitError(f"unknown mask {path!r}: use box:SIZE, random:FRACTION, half[:SIDE] or a mask image file")
    try:
        a = np.asarray(Image.open(path).convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise DiffusekitError(f"cannot read mask image {path}: {e}") from None
    H, W = hw(size)
    if a.shape != (H, W):
        raise DiffusekitError(f"mask image {path} is {a.shape[1]}x{a.shape[0]}; the images are {W}x{H}")
    return torch.from_numpy((a == 0).astype(np.float32))[None, None]


# ---------------------------------------------------------------------------------------------------------
# Methods


@dataclass
class Measurement:
    op: LinearOperator
    y: torch.Tensor
    sigma_y: float = 0.0  # model-space std of the measurement noise


def rectified(denoiser, meas: Measurement, sigma_data: float = 0.5):
    """DDNM's range-space correction as a denoiser (see the module docstring)."""
    op, y, sy = meas.op, meas.y, meas.sigma_y

    def D(x, sigma):
        x0 = denoiser(x, sigma)
        if sy == 0:
            return op.replace(x0, y)
        # Var[x0 | x_sigma] is at most sigma^2 and at most the data's variance: without the second bound an
        # ill-conditioned operator (blur) amplifies the measurement noise by up to sigma / sigma_y at high sigma
        r2 = float(sigma) ** 2 * sigma_data**2 / (float(sigma) ** 2 + sigma_data**2)
        return x0 + r2 * op.At(op.gram_solve(y - op.A(x0), sy**2 / r2))
    return D


def dps(denoiser, meas: Measurement, zeta: float = 1.0):
    """DPS's measurement gradient folded into the denoiser (see the module docstring)."""
    op, y = meas.op, meas.y

    def D(x, sigma):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = denoiser(xg, sigma)
            resid = (y - op.A(x0)).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(resid.sum(), xg)
        return (x0 - zeta * float(sigma) ** 2 * grad).detach()
    return D


def tweedie(denoiser, y, sigma_y: float):
    """E[x0 | y] for y = x0 + sigma_y n: the denoiser at sigma_y."""
    if sigma_y <= 0:
        raise DiffusekitError("Tweedie denoising needs the noise sigma > 0")
    return denoiser(y, y.new_tensor(sigma_y))


STOCHASTIC = {"ddpm": {}, "dpmpp-2m-sde": {}, "dpmpp-3m-sde": {}, "sa-solver": {}, "ddim": {"eta": 1.0}, "euler": {"churn": 40.0}, "heun": {"churn": 40.0}}


def posterior_sample(denoiser, y, sigmas, seeds, sampler="ddpm", temperature=1.0, **knobs):
    """Samples of p(x0 | y) for y = x0 + sigma_y n, sigmas running from sigma_y to 0."""
    if sampler not in STOCHASTIC:
        raise DiffusekitError(f"posterior sampling needs a stochastic sampler ({', '.join(STOCHASTIC)}), got {sampler!r}")
    knobs = {**STOCHASTIC[sampler], **knobs}
    if not any(knobs.values()) and sampler in ("ddim", "euler", "heun"):
        raise DiffusekitError(f"posterior sampling with {sampler} needs {'eta' if sampler == 'ddim' else 'churn'} > 0")
    return get_sampler(sampler)(denoiser, y, sigmas, temperature=temperature, generator=PerSampleNoise(seeds), **knobs)


def repaint(denoiser, meas: Measurement, x, sigmas, *, sampler="ddpm", resample=4, temperature=1.0, generator=None,
            **knobs):
    """RePaint with one-step jumps; each step is one step of `sampler` (multistep samplers run first-order here).
    The measured part of x is replaced by the measurement noised to the current level. A noisy measurement is
    itself a draw at level s_y = sigma_y * noise_gain, so it is noised up to sigma while sigma > s_y, and below
    s_y the sampler alone carries on (for denoising this is exact posterior sampling)."""
    if resample < 1:
        raise DiffusekitError(f"RePaint resamplings must be >= 1, got {resample}")
    op, y, step = meas.op, meas.y, get_sampler(sampler)
    s = [float(v) for v in sigmas]
    for i in range(len(s) - 1):
        sigma, sigma_next = s[i], s[i + 1]
        for u in range(resample):
            x = op.noisy_replace(x, y, sigma, meas.sigma_y, temperature * randn_like(x, generator))
            x = step(denoiser, x, torch.tensor([sigma, sigma_next]), temperature=temperature, generator=generator, **knobs)
            if u < resample - 1 and sigma_next > 0:  # back to sigma: x_sigma ~ q(x_sigma | x_sigma_next)
                x = x + math.sqrt(sigma**2 - sigma_next**2) * temperature * randn_like(x, generator)
    return op.replace(x, y) if meas.sigma_y == 0 else x


def consistency(meas: Measurement, x) -> torch.Tensor:
    """Per-sample RMS of y - A(x), model units (compare with sigma_y: a consistent restoration leaves about that)."""
    return (meas.y - meas.op.A(x)).flatten(1).pow(2).mean(1).sqrt()


# ---------------------------------------------------------------------------------------------------------
# One entry point for the CLI and the Python API

METHODS = ("ddnm", "repaint", "dps", "tweedie", "sample")


@dataclass
class RestoreConfig(KnobOptions):
    """How to restore: the method (ddnm | repaint | dps | tweedie | sample), restorations per input, and for the
    sampling methods the sampler, its steps, knobs and temperature; zeta: DPS's step size; resample: RePaint's
    resamplings per step; grid: the sigma grid of repaint, ddnm and dps (`schedules.sigma_grid`; None: auto, the
    run's tuned grid for these steps where `tune-steps` made one, else karras). None: not given (the method's
    default)."""
    method: str = "repaint"
    n_samples: int = 1
    sampler: str | None = None
    steps: int | None = None
    grid: str | None = None
    temperature: float | None = None
    seed: int = 0
    zeta: float | None = None
    resample: int | None = None
    batch_size: int = 64
    knobs: dict = field(default_factory=dict)

    def validate(self):
        check_choice("method", self.method, METHODS)
        if self.method == "tweedie":
            self.unused(("sampler", "steps", "temperature", "grid"), "does not apply to method tweedie (one denoiser "
                        "call, no sampler)", "method")
            bad = sorted(self.knobs)
            check(not bad, f"{bad[0] if bad else ''} does not apply to method tweedie (no sampler)", *bad[:1], "method")
            check(self.n_samples == 1, "Tweedie denoising is deterministic (the posterior mean): use method sample "
                  "for several n_samples", "n_samples")
        if self.method == "sample":
            self.unused(("grid",), "does not apply to method sample (a karras grid from the noise level down)", "method")
        check(self.grid is None or self.grid in MODEL_GRIDS + GRIDS, f"grid must be one of "
              f"{', '.join(MODEL_GRIDS + GRIDS)}, got {self.grid!r}", "grid")
        for name, only in (("zeta", "dps"), ("resample", "repaint")):
            if self.method != only:
                self.unused((name,), f"is an option of method {only} (the method here is {self.method})", "method")
        check(isinstance(self.n_samples, int) and self.n_samples >= 1,
              f"n_samples must be at least 1, got {self.n_samples}", "n_samples")
        check(self.zeta is None or (self.zeta >= 0 and math.isfinite(self.zeta)),
              f"zeta must be a finite number >= 0, got {self.zeta}", "zeta")
        check(self.resample is None or self.resample >= 1, f"resample must be at least 1, got {self.resample}",
              "resample")
        t = self.temperature
        check(t is None or (t >= 0 and math.isfinite(t)), f"temperature must be a finite number >= 0, got {t}",
              "temperature")
        check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be >= 0, got {self.seed}", "seed")
        check_knobs(self.sampler or "ddpm", self.knobs)


def check_method(method, op, sigma_y):
    if sigma_y < 0 or not math.isfinite(sigma_y):
        raise DiffusekitError(f"sigma must be a finite number >= 0, got {sigma_y:g}", "sigma")
    if method in ("tweedie", "sample") and not (isinstance(op, Identity) and sigma_y > 0):
        raise DiffusekitError(f"method {method} is for Gaussian denoising (identity operator, noise sigma > 0)",
                              "method")
    if method == "repaint" and sigma_y > 0 and not op.repaint_noisy:
        raise DiffusekitError("RePaint with a noisy measurement needs an operator with equal singular values (mask, "
                              "down-sampling, grey, identity) or a blur; use method ddnm", "method")


RESTORE_STEPS = 20  # the sampling methods' steps when not given


def restore_grid(c: RestoreConfig, tuned: dict | None) -> str | None:
    """The grid a restoration runs on: none for tweedie, karras (from the noise level down) for sample, else the
    given grid with auto resolved (`schedules.grid_name`)."""
    if c.method == "tweedie":
        return None
    return "karras" if c.method == "sample" else grid_name(c.grid or "auto", c.steps or RESTORE_STEPS, tuned)


def restore(denoiser, model_config, op, y, config: RestoreConfig, *, sigma_y=0.0, device="cpu", progress=False,
            tuned: dict | None = None):
    """config.n_samples restorations of each measurement y[i] (input-major, [N * n_samples, ...]) in model space, on
    the CPU. denoiser: D(x, sigma) (for a conditional model, `precond.unconditional`). tuned: the model's fitted
    grids."""
    c = config
    method, k = c.method, c.n_samples
    check_method(method, op, sigma_y)
    sampler, steps = c.sampler or "ddpm", c.steps or RESTORE_STEPS
    temperature = 1.0 if c.temperature is None else c.temperature
    if method == "sample":
        if sigma_y <= model_config.sigma_min:
            raise DiffusekitError(f"noise sigma {sigma_y:g} (model units) is below the model's sigma_min", "sigma")
        sigmas = sampling_sigmas("karras", steps, model_config.sigma_min, min(sigma_y, model_config.sigma_max))
    else:
        grid = restore_grid(c, tuned)  # None for tweedie, which takes no grid
        sigmas = None if grid is None else sigma_grid(model_config, steps, grid, tuned=tuned)

    def batch(rows, seeds):
        idx = rows // k
        meas = Measurement(op.take(idx), y[idx].to(device), sigma_y)
        if method == "tweedie":
            return tweedie(denoiser, meas.y, sigma_y)
        if method == "sample":
            return posterior_sample(denoiser, meas.y, sigmas, seeds, sampler, temperature, **c.knobs)
        if method == "repaint":
            noise = PerSampleNoise(seeds)
            x0 = noise.randn((len(idx), *model_config.in_shape), device=device) * (float(sigmas[0]) * temperature)
            return repaint(denoiser, meas, x0, sigmas, sampler=sampler, resample=c.resample or 4,
                           temperature=temperature, generator=noise, **c.knobs)
        D = rectified(denoiser, meas, model_config.sigma_data) if method == "ddnm" else dps(denoiser, meas, 1.0 if c.zeta is None else c.zeta)
        x = generate(D, sampler, (len(idx), *model_config.in_shape), sigmas, seeds=seeds, temperature=temperature,
                     device=device, **c.knobs)
        return meas.op.replace(x, meas.y) if method == "ddnm" and sigma_y == 0 else x  # exact on a noiseless y

    with torch.no_grad():
        return map_batches(lambda rows, seeds: batch(rows, seeds).float(), len(y) * k, c.batch_size, seed=c.seed,
                           desc=method, progress=progress)
