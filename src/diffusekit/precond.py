"""Parameterizations as four coefficients, and the denoiser D(x, sigma) that everything else calls.

``D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise)`` with ``x = x0 + sigma * eps`` (Karras et al. 2022,
Table 1). eps-, x0- and v-prediction are the VP network seeing ``x_vp = x / sqrt(1 + sigma^2)``; EDM scales by
sigma_data. Each function returns (c_skip, c_out, c_in) as tensors broadcastable against x.
"""
from __future__ import annotations

import math

import torch

from .errors import DiffusekitError
from .schedules import alpha_bar_to_sigma, sigma_to_timestep


# Plain arithmetic only, so the same functions serve a python float (one sigma for the whole batch) and a
# tensor of per-sample sigmas.


def coeffs_eps(sigma, sigma_data):
    # x0 = x - sigma * eps_hat
    return 1 + 0 * sigma, -sigma, (1 + sigma**2) ** -0.5


def coeffs_x0(sigma, sigma_data):
    return 0 * sigma, 1 + 0 * sigma, (1 + sigma**2) ** -0.5


def coeffs_v(sigma, sigma_data):
    # v = alpha * eps - s * x0 on x_vp = alpha x0 + s eps  =>  x0 = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) * v
    return 1 / (1 + sigma**2), -sigma * (1 + sigma**2) ** -0.5, (1 + sigma**2) ** -0.5


def coeffs_edm(sigma, sigma_data):
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data * s2**-0.5, s2**-0.5


PARAMETERIZATIONS = {"eps": coeffs_eps, "x0": coeffs_x0, "v": coeffs_v, "edm": coeffs_edm}


def log_noise(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's c_noise = ln(sigma) / 4: continuous noise conditioning for our own networks."""
    return sigma.log() / 4


class Denoiser(torch.nn.Module):
    """Wraps a raw network ``F(x, c_noise, class_labels)`` into ``D(x, sigma, class_labels)``.

    ``alpha_bars`` (optional): condition F on the (fractional) timestep of a discrete VP table instead of
    ln(sigma)/4 -- how DDPM-style models, ours or diffusers', become a sigma-space denoiser.
    """

    def __init__(self, net, parameterization="edm", sigma_data=0.5, alpha_bars=None, sigma_min=0.002, sigma_max=80.0):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise DiffusekitError(f"unknown parameterization {parameterization!r}; choose one of {sorted(PARAMETERIZATIONS)}")
        self.net, self.parameterization, self.sigma_data = net, parameterization, float(sigma_data)
        self.coeffs = PARAMETERIZATIONS[parameterization]
        self.register_buffer("alpha_bars", None if alpha_bars is None else torch.as_tensor(alpha_bars, dtype=torch.float64), persistent=False)
        self.register_buffer("log_sigmas", None if alpha_bars is None else alpha_bar_to_sigma(self.alpha_bars).log(),
                             persistent=False)  # log sigma(t), increasing in t
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_sigma_list = None  # python copy of log_sigmas for the scalar path

    def with_net(self, net) -> "Denoiser":
        """The same preconditioning around another network (e.g. the EMA copy)."""
        return Denoiser(net, self.parameterization, self.sigma_data, self.alpha_bars, self.sigma_min, self.sigma_max)

    def c_noise(self, sigma):
        """c_noise for a tensor of sigmas, or a python float for a float."""
        if self.alpha_bars is None:
            return math.log(sigma) / 4 if isinstance(sigma, float) else log_noise(sigma)
        if isinstance(sigma, float):
            if self._log_sigma_list is None:
                self._log_sigma_list = self.log_sigmas.tolist()
            return sigma_to_timestep(sigma, log_sigmas=self._log_sigma_list)
        return sigma_to_timestep(sigma, log_sigmas=self.log_sigmas).to(sigma.dtype)

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        """sigma: a number or 0-dim tensor (one level for the batch) or a tensor of N per-sample levels.
        augment_labels: training only (augment.py); sampling leaves them out (un-augmented data)."""
        aug = {} if augment_labels is None else {"augment_labels": augment_labels}
        if not torch.is_tensor(sigma) or sigma.numel() == 1:
            # One noise level for the whole batch (sampling): scalar coefficients keep the per-step cost to a
            # few tensor ops (benchmarks/speed/bench_samplers.py measures it).
            s = float(sigma)
            c_skip, c_out, c_in = self.coeffs(s, self.sigma_data)
            c_noise = torch.full((x.shape[0],), self.c_noise(s), dtype=x.dtype, device=x.device)
            F = self.net(c_in * x, c_noise, class_labels, **aug)
            return torch.add(c_skip * x if c_skip != 1 else x, F.to(x.dtype), alpha=c_out)
        sigma = sigma.to(x.device, x.dtype).reshape(-1)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in = self.coeffs(s, self.sigma_data)
        F = self.net(c_in * x, self.c_noise(sigma), class_labels, **aug)
        return torch.addcmul(c_skip * x, c_out, F.to(x.dtype))

    def representation(self, x, sigma: float, class_labels=None, **knobs):
        """The network's own features of x at noise level sigma (one level for the batch) [N, F], for networks that
        define them (our U-Net; knobs go to it), else None. The one place past D that the network shows: the anomaly detector's
        nearest-neighbour score needs what the network has learned of normal images, not only its output."""
        if not hasattr(self.net, "representation"):
            return None
        _, _, c_in = self.coeffs(float(sigma), self.sigma_data)
        c_noise = torch.full((x.shape[0],), self.c_noise(float(sigma)), dtype=x.dtype, device=x.device)
        return self.net.representation(c_in * x, c_noise, class_labels, **knobs)


class DiffusersUNet(torch.nn.Module):
    """Adapts a diffusers ``UNet2DModel`` to our raw-network signature F(x, c_noise, class_labels)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, class_labels=None):
        return self.unet(x, t, class_labels=class_labels).sample


def from_diffusers(unet, scheduler) -> Denoiser:
    """A diffusers UNet2DModel + DDPM-family scheduler config as our denoiser (eps, v or sample prediction)."""
    kind = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}.get(scheduler.config.prediction_type)
    if kind is None:
        raise DiffusekitError(f"unsupported diffusers prediction_type {scheduler.config.prediction_type!r}")
    ab = scheduler.alphas_cumprod.double()
    sig = ((1 - ab) / ab).sqrt()
    return Denoiser(DiffusersUNet(unet), kind, 1.0, alpha_bars=ab, sigma_min=float(sig[0]), sigma_max=float(sig[-1]))


class MeanDenoiser(torch.nn.Module):
    """Several denoisers of one data space as one: their mean. Each estimates E[x0 | x_sigma], so the mean is an
    estimate of the same thing whose error from any one training run's quirks is averaged down (bagging). Trained on
    a few hundred rows, a network learns them almost by heart and fills the space between them in its own way; the
    mean of several runs is a smoother model of the normal data (the anomaly detector's ensembles)."""

    def __init__(self, denoisers):
        super().__init__()
        self.members = torch.nn.ModuleList(denoisers)

    def forward(self, x, sigma, class_labels=None):
        return sum(D(x, sigma, class_labels) for D in self.members) / len(self.members)

    def representation(self, x, sigma, class_labels=None, **knobs):
        """The members' representations side by side (None if one has none)."""
        reps = [D.representation(x, sigma, class_labels, **knobs) for D in self.members]
        return None if any(r is None for r in reps) else torch.cat(reps, 1)


# ---------------------------------------------------------------------------------------------------------
# Conditioning wrappers: each keeps the denoiser's signature, so every sampler and task serves every model


def guided(denoiser, labels: torch.Tensor, guidance: float, null_label: int):
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser: D_u + w (D_c - D_u); w = 1 is plain conditional."""

    def D(x, sigma, class_labels=None):
        if guidance == 1.0:
            return denoiser(x, sigma, labels)
        if torch.is_tensor(sigma) and sigma.numel() > 1:
            sigma = sigma.reshape(-1).repeat(2)
        null = torch.full_like(labels, null_label)
        d_c, d_u = denoiser(torch.cat([x, x]), sigma, torch.cat([labels, null])).chunk(2)
        return d_u + guidance * (d_c - d_u)

    return D


def unconditional(denoiser, model_config, labels=None):
    """D(x, sigma) for a (possibly class-conditional) model: with the given labels, else the null label."""
    if model_config.num_classes == 0:
        if labels is not None:
            raise DiffusekitError("this model is unconditional; it takes no class labels", "labels")
        return denoiser
    fixed = labels

    def D(x, sigma):
        lab = fixed if fixed is not None else torch.full((x.shape[0],), model_config.num_classes, dtype=torch.long)
        return denoiser(x, sigma, lab.to(x.device))
    return D
