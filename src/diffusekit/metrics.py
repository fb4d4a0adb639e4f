"""Distribution distances and image-quality figures."""
from __future__ import annotations

import torch


def _mean_dist(a, b, chunk=2048):
    total = 0.0
    for i in range(0, len(a), chunk):
        total += float(torch.cdist(a[i:i + chunk], b).sum())
    return total / (len(a) * len(b))


def energy_distance(x, y) -> float:
    """Squared energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic) between two sample sets [N, D]."""
    x, y = torch.as_tensor(x, dtype=torch.float64).flatten(1), torch.as_tensor(y, dtype=torch.float64).flatten(1)
    return 2 * _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y)
