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


# ---------------------------------------------------------------------------------------------------------
# Feature-space image metrics (features from our own classifier: see evaluate.py)


def _gaussian_fit(f):
    f = torch.as_tensor(f, dtype=torch.float64)
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (len(f) - 1)


def frechet_distance(f1, f2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussian fits of two feature sets [N, D]."""
    mu1, s1 = _gaussian_fit(f1)
    mu2, s2 = _gaussian_fit(f2)
    # Tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    tr_sqrt = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * tr_sqrt)


def kernel_inception_distance(f1, f2, subset_size=1000, subsets=100, seed=0):
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and std over subsets."""
    f1, f2 = torch.as_tensor(f1, dtype=torch.float64), torch.as_tensor(f2, dtype=torch.float64)
    m = min(subset_size, len(f1), len(f2))
    d = f1.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = f1[torch.randperm(len(f1), generator=g)[:m]]
        y = f2[torch.randperm(len(f2), generator=g)[:m]]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(float(off - 2 * kxy.mean()))
    t = torch.tensor(vals)
    return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0


def precision_recall(real, fake, k=3):
    """k-NN precision and recall (Kynkaanniemi et al. 2019): the share of fake samples inside the real manifold
    (union of balls reaching each real sample's k-th neighbour), and of real samples inside the fake one."""
    real, fake = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)

    def radii(f):
        return torch.cat([torch.cdist(f[i:i + 1024], f).kthvalue(k + 1, dim=1).values for i in range(0, len(f), 1024)])

    def coverage(manifold, r, query):
        inside = [(torch.cdist(query[i:i + 1024], manifold) <= r[None]).any(1) for i in range(0, len(query), 1024)]
        return float(torch.cat(inside).float().mean())

    return coverage(real, radii(real), fake), coverage(fake, radii(fake), real)


def bootstrap_se(fn, x, y, n_boot=20, seed=0) -> float:
    """Standard error of fn(x, y) from resampling x (the evaluated samples) with replacement."""
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(x)
    vals = torch.tensor([fn(x[torch.randint(0, len(x), (len(x),), generator=g)], y) for _ in range(n_boot)])
    return float(vals.std())


def marginal_distances(x, y):
    """Per-column Wasserstein-1 distance between two sample sets [N, D] (quantile matching)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    q = torch.linspace(0, 1, 1001, dtype=torch.float64)
    return [float((torch.quantile(x[:, j], q) - torch.quantile(y[:, j], q)).abs().mean()) for j in range(x.shape[1])]


# ---------------------------------------------------------------------------------------------------------
# Per-image fidelity (restoration): images as float arrays in [0, 1], N x H x W x C


def psnr(x, ref) -> "torch.Tensor":
    """Peak signal-to-noise ratio in dB per image (peak 1)."""
    x, ref = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    mse = (x - ref).flatten(1).pow(2).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(x, ref, sigma: float = 1.5) -> "torch.Tensor":
    """Structural similarity per image (Wang et al. 2004: Gaussian window of std 1.5, K1 = 0.01, K2 = 0.03,
    valid positions only, channels averaged); the window is cut to the image for small images."""
    x = torch.as_tensor(x, dtype=torch.float64).permute(0, 3, 1, 2)
    ref = torch.as_tensor(ref, dtype=torch.float64).permute(0, 3, 1, 2)
    r = min(5, (min(x.shape[-2:]) - 1) // 2)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t**2 / (2 * sigma**2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    c = x.shape[1]
    w = w.expand(c, 1, *w.shape)
    blur = lambda z: torch.nn.functional.conv2d(z, w, groups=c)  # noqa: E731
    mx, my = blur(x), blur(ref)
    vx, vy, cov = blur(x * x) - mx**2, blur(ref * ref) - my**2, blur(x * ref) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
