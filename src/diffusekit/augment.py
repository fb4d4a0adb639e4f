"""Augmentation of training images, for small data sets.

"flip": each image mirrored left-right half of the time; samples may come out mirrored (for data whose mirror image
is as likely as the image). "edm": EDM's non-leaking augmentation (Karras et al. 2022, appendix F.2, after
StyleGAN2-ADA): every image is mirrored half of the time and, each with probability p, rotated, scaled and shifted,
and the network is told how by an augmentation vector (zero for an untouched image). It learns augmented images as
their own condition; sampling asks for the zero vector, so samples come out un-augmented.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("off", "flip", "edm")
AUGMENT_DIM = 6  # the "edm" vector: mirrored, shift x, shift y, log2 scale, cos(angle) - 1, sin(angle)


def draw_augment(n: int, mode: str, p: float, generator: torch.Generator):
    """Per-image affine maps theta [n, 2, 3] (output -> input coordinates in [-1, 1]) and, for "edm", their
    vectors [n, AUGMENT_DIM]; (None, None) for "off"."""
    if mode == "off":
        return None, None
    u = lambda: torch.rand(n, generator=generator, dtype=torch.float64)  # noqa: E731
    z = lambda: torch.randn(n, generator=generator, dtype=torch.float64)  # noqa: E731
    mirror = (u() < 0.5).double()
    zero = torch.zeros(n, dtype=torch.float64)
    if mode == "flip":
        shift_x = shift_y = log_scale = angle = zero
    else:  # EDM's settings for CIFAR-10: translations of 1/8 of the size, scales of 2^N(0, 0.2), any rotation
        shift_x, shift_y = (0.125 * z() * (u() < p) for _ in range(2))
        log_scale = 0.2 * z() * (u() < p)
        angle = (2 * u() - 1) * math.pi * (u() < p)
    c, s, k = torch.cos(angle), torch.sin(angle), 2.0 ** -log_scale
    sign = 1 - 2 * mirror
    theta = torch.stack([torch.stack([k * c * sign, -k * s, 2 * shift_x], 1),
                         torch.stack([k * s * sign, k * c, 2 * shift_y], 1)], 1)
    if mode == "flip":
        return theta.float(), None
    return theta.float(), torch.stack([mirror, shift_x, shift_y, log_scale, c - 1, s], 1).float()


def apply_augment(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Images x [N, C, H, W] through the affine maps theta (bilinear, mirrored at the borders); the identity and a
    mirror are exact."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
