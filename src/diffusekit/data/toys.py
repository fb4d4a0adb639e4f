"""2-D toy distributions (fixed seed, so a spec always means the same data)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..analytic import gmm8
from ..errors import DiffusekitError


def _gmm8(n, rng):
    return gmm8().sample(n, torch.Generator().manual_seed(int(rng.integers(2**31)))).numpy()


def _checkerboard(n, rng):
    # uniform on the 8 dark squares of a 4x4 board on [-4, 4]^2 (density 1/32 there)
    x1 = rng.uniform(-4, 4, n)
    x2 = rng.uniform(0, 2, n) + 2 * rng.integers(0, 2, n) - 4 + 2 * (np.floor(x1 / 2) % 2)
    return np.stack([x1, x2], 1)


def _swissroll(n, rng):
    t = 1.5 * math.pi * (1 + 2 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3
    return x + 0.1 * rng.standard_normal((n, 2))


def _moons(n, rng):
    k = rng.integers(0, 2, n)
    a = rng.uniform(0, math.pi, n)
    x = np.where(k[:, None] == 0, np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1))
    return x + 0.05 * rng.standard_normal((n, 2))


TOYS = {"gmm8": _gmm8, "checkerboard": _checkerboard, "swissroll": _swissroll, "moons": _moons}


def toy_data(name: str, n: int = 20000, seed: int = 0) -> np.ndarray:
    if name not in TOYS:
        raise DiffusekitError(f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")
    if n < 1:
        raise DiffusekitError(f"toy size must be positive, got {n}")
    return TOYS[name](n, np.random.default_rng(seed)).astype(np.float64)
