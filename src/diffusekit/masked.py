"""Masked (absorbing-state) diffusion of token sequences: MDLM (Sahoo et al. 2024), MD4 (Shi et al. 2024).

Forward process: at time t in [0, 1] each token is replaced by MASK independently with probability t (the linear
schedule: alpha_t = 1 - t is the chance a token is still clean). The network sees the partly masked sequence z_t and
gives, at every position, a distribution over the clean token; clean tokens of z_t are carried over as they are.
The negative ELBO (in nats per sequence) is

    -log p(x) <= E_{t ~ U(0, 1)} [ (1 / t) * sum_{i masked in z_t} -log p_theta(x_i | z_t) ]

(the continuous-time bound, whose weight -alpha'_t / (1 - alpha_t) is 1 / t for the linear schedule). Training
minimizes it per token; `nll` estimates it on stratified levels; `sample_tokens` runs the reverse process from an all-MASK
sequence, unmasking a share of the positions at each step.

Temperature keeps its one meaning: it scales every random draw of sampling, here Gumbel draws. A token is
argmax(logits + T g) = a draw from softmax(logits / T) (T = 1: the model's distribution, T = 0: its most likely token);
the positions unmasked at a step are those with the largest T g' (at any T > 0 a uniformly random order, as in the
reverse process; at T = 0 left to right).
"""
from __future__ import annotations

import torch
from torch import nn

from .samplers import PerSampleNoise

T_MIN = 1e-3  # the smallest masking level drawn: the bound's weight 1 / t stays finite


class TokenDenoiser(nn.Module):
    """A network over token ids as the masked model of a run: `mask` is the MASK id (the codec's token count);
    `forbid`: ids the model is never to produce (UNK, and PAD inside a text window). __call__(z, labels) -> log
    p(clean token) [N, L, mask]."""

    def __init__(self, net, mask: int, forbid=()):
        super().__init__()
        self.net, self.mask, self.forbid = net, int(mask), tuple(forbid)

    def with_net(self, net) -> "TokenDenoiser":
        return TokenDenoiser(net, self.mask, self.forbid)

    def forward(self, z, labels=None):
        logits = self.net(z, labels).float()
        if self.forbid:
            logits[..., list(self.forbid)] = -torch.inf
        return torch.log_softmax(logits, -1)


def masked_loss(denoiser, x0, t, u, labels=None) -> torch.Tensor:
    """The bound's integrand at levels t [N] with mask draws u [N, L] (position i masked where u < t), in nats per
    token: (1 / t) * sum over masked positions of -log p(x_i | z_t), over L."""
    masked = u < t[:, None]
    z = torch.where(masked, torch.full_like(x0, denoiser.mask), x0)
    nll = -denoiser(z, labels).gather(-1, x0[..., None])[..., 0]
    return (nll * masked).sum(1) / t / x0.shape[1]


class MaskedDiffusionLoss:
    """loss(denoiser, x0, labels, t, u) -> per-sequence bound in nats per token, with the trainer's calling
    convention (t and u drawn once per global batch by `draw`). t is low-discrepancy over the batch (one uniform
    offset, evenly spaced levels: MDLM's variance reduction)."""

    def draw(self, shape, generator=None):
        n = shape[0]
        t = (torch.arange(n) / n + torch.rand(1, generator=generator)) % 1
        return t * (1 - T_MIN) + T_MIN, torch.rand(shape, generator=generator)

    def __call__(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None, augment_labels=None):
        if sigma is None:
            sigma, eps = self.draw(x0.shape, generator)
        return masked_loss(denoiser, x0, sigma.to(x0.device), eps.to(x0.device), labels)


def _gumbel(noise, shape, device):
    return -torch.log(-torch.log(noise.rand(shape, device=device).clamp(1e-20, 1 - 1e-16)))


@torch.no_grad()
def sample_tokens(denoiser, z, steps: int, *, seeds, temperature: float = 1.0, labels=None, callback=None):
    """Unmask the MASK positions of z [N, L] (all of them: generation; some: infilling) in `steps` steps: after step j
    a share (steps - j - 1) / steps of each row's masked positions is still masked. Row i's draws come from seeds[i]."""
    noise, device = PerSampleNoise(seeds), z.device
    z = z.clone()
    masked = z == denoiser.mask
    start = masked.sum(1)
    T = float(temperature)
    for j in range(steps):
        keep = torch.div(start * (steps - j - 1), steps, rounding_mode="floor")  # still masked after this step
        logp = denoiser(z, labels)
        g_pos, g_tok = _gumbel(noise, z.shape, device), _gumbel(noise, logp.shape, device)
        order = T * g_pos if T > 0 else -torch.arange(z.shape[1], device=device, dtype=torch.float64).expand(z.shape)
        order = torch.where(masked, order, -torch.inf)
        rank = order.argsort(1, descending=True).argsort(1)  # 0 for the position unmasked first
        reveal = masked & (rank < (masked.sum(1) - keep)[:, None])
        tokens = (logp.double() + T * g_tok).argmax(-1) if T > 0 else logp.argmax(-1)
        z = torch.where(reveal, tokens, z)
        masked = masked & ~reveal
        if callback is not None:
            callback({"i": j, "tokens": z})
    return z


@torch.no_grad()
def masked_nll(denoiser, x0, levels: int, seeds, labels=None) -> torch.Tensor:
    """The negative ELBO of sequences x0 [N, L] in nats per sequence, on `levels` stratified masking levels per
    sequence (level k in [k, k + 1) / levels, its own mask draws), from per-sequence seeds."""
    noise, device = PerSampleNoise(seeds), x0.device
    n, L = x0.shape
    offsets = noise.rand((n, levels), device=device)
    total = torch.zeros(n, dtype=torch.float64, device=device)
    for k in range(levels):
        t = ((k + offsets[:, k]) / levels).clamp_min(T_MIN)
        u = noise.rand((n, L), device=device)
        total += masked_loss(denoiser, x0, t.float(), u.float(), labels).double() * L
    return total / levels


@torch.no_grad()
def masked_profile(denoiser, x0, levels: int, seeds, unknown: int | None = None, labels=None):
    """What an anomaly score reads off masked diffusion, for sequences x0 [N, L] on `levels` stratified masking
    levels: (the bound's integrand at each level, in nats per token [N, levels]; each position's mean -log p(x_i | z_t)
    over the levels that masked it [N, L], 0 where none did). Tokens equal to `unknown` (characters the model never
    saw) stay masked and count nowhere: they are scored apart."""
    noise, device = PerSampleNoise(seeds), x0.device
    n, L = x0.shape
    known = x0 != unknown if unknown is not None else torch.ones_like(x0, dtype=torch.bool)
    offsets = noise.rand((n, levels), device=device)
    per_level = torch.zeros(n, levels, dtype=torch.float64, device=device)
    ce_sum = torch.zeros(n, L, dtype=torch.float64, device=device)
    count = torch.zeros(n, L, dtype=torch.float64, device=device)
    for k in range(levels):
        t = ((k + offsets[:, k]) / levels).clamp_min(T_MIN)
        masked = (noise.rand((n, L), device=device) < t[:, None]) & known
        z = torch.where(masked | ~known, torch.full_like(x0, denoiser.mask), x0)
        ce = -denoiser(z, labels).gather(-1, torch.where(known, x0, 0)[..., None])[..., 0].double()
        ce = torch.where(masked, ce, 0.0)
        per_level[:, k] = ce.sum(1) / t / known.sum(1).clamp_min(1)
        ce_sum += ce
        count += masked
    return per_level, torch.where(count > 0, ce_sum / count.clamp_min(1), 0.0)
