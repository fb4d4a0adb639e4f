"""Anomaly detection from a model of normal data: scores that are functions of the denoiser, and split-conformal
calibration of their combination (DESIGN.md: tasks wrap the denoiser).

Scores, each higher = less like the normal data:
- ``profile``: the denoising-error profile, log E||D(x + sigma eps, sigma) - x||^2 / d at K noise levels, scored by
  its Mahalanobis distance under a Gaussian (Ledoit-Wolf shrinkage) fitted on held-out normal data (adjacent levels
  averaged to keep at least 10 fit samples per dimension: `profile_bins`). For tables the distance is one-sided: levels
  where the error is below the normal mean count as 0. A table's network learns its few hundred rows by heart and
  denoises them (and any copy of them) far better than held-out normal rows; two-sided, that flagged most of the rows
  it was trained on (68 of the 130 normal wine rows a detector was fit on, at --fpr 0.1). Images keep the two-sided distance (below);
- ``reconstruction``: x is noised part-way (to a few levels) and brought back by deterministic DDIM; the log of the
  error, in pixels (or standardized columns) and, with ``features=True`` (images with a shipped classifier), in its
  feature space;
- ``likelihood``: for images, the ELBO in bits/dim minus the input's complexity, its PNG-compressed size in bits/dim
  (Serra et al. 2020): raw likelihood ranks simple out-of-distribution images (MNIST under a Fashion-MNIST model) as
  *more* likely, and the difference cancels that. For tables, the NLL from the probability-flow ODE (4 Hutchinson
  probes, tolerance 1e-3);
- ``neighbours``: the mean distance to the NEIGHBOURS nearest normal samples in the network's own representation
  (`precond.Denoiser.representation`: the U-Net's bottleneck, the residual MLP's last hidden state) of the sample
  noised a little. The reference holds normal samples that are never calibration samples (`Detector._fit_reference`).
  On the Fashion-MNIST one-class protocol it is the strongest score by far, above the k-NN distance on pixels: a
  model of one class represents that class's shapes, and the others land far from them. On tables it is about as
  good as the k-NN distance on the standardized columns (the best component on two of three benchmark tables).
For images the reconstruction errors are first corrected for complexity like the likelihood: a simple image (a
digit on black) is reconstructed with less error than a detailed one, whatever data the model learned, so the raw
error calls simple out-of-distribution images normal (Fashion-MNIST model against MNIST: AUROC 0.29). Each is
replaced by its residual from a straight line in the PNG complexity fitted on the held-out normal "fit" split: the
error relative to normal images of the same complexity. The images' profile needs no correction: its Mahalanobis
distance is two-sided and already flags errors unusually low for the normal data (their models, trained on thousands
of images for minutes, are far from learning them by heart).
Ensembles: a detector can score with the mean denoiser of several models trained on the same rows with different
seeds (`precond.MeanDenoiser`); every score then uses that one denoiser. Tables train three by default, sharing the
training budget (`default_models`).
Averaged noise draws: each error is a mean over d dimensions, so with few dimensions (tables) one noise draw per
level is noisy: the scores of min(16, ceil(256 / d)) draws are averaged (1 for images of 256 pixels or more, 4 for
8x8 digits). The number is stored with the detector: its statistics hold only for scores made the same way.
Each score is standardized by the median and MAD of the fit split (the profile's by out-of-fold distances: the rows
that fitted its Gaussian sit too close to it), each oriented so that larger is less normal. The combination is a
weighted mean of those robust z-scores whose weights are chosen on the fit split alone, with no anomaly and no label:
the non-negative weights, summing to 1, of least variance on normal data. An anomaly that moves every score by the
same number of normal spreads then moves the combination by that much, while its spread on normal data is the
smallest any such mean has: the separation from normal data is the largest. Scores that repeat one another (the
error profile and the reconstruction error are strongly correlated) share one weight instead of counting twice. The
variance is that of the scores' normal quantiles of rank (`normal_scores`), not of the z-scores themselves: a robust
z-score has one normal spread in its bulk but not in its tail. The neighbour distance has a long right tail on normal
images (a few atypical ones far from every reference): its variance on the fit split is 1.4-3.6 where the others'
are about 1.2, and the least-variance weights gave it as little as 0.11 on the one-class tasks where it separates
best (benchmarks/RESULTS.md). The ranks keep how the scores move together and drop their tails.
Features: for Fashion-MNIST and digits, reconstructions can also be compared in the shipped classifier's feature
space (`features=True`, off by default): that classifier was trained with the labels of every class of its data
set, so it has seen the anomalies whenever they are other classes of that set (the one-class protocol).

Calibration (split conformal, Vovk et al. 2005; Angelopoulos & Bates 2021): with n calibration scores from normal data
that the model and the fit split did not see, p(x) = (1 + #{calibration scores >= s(x)}) / (n + 1). If x is normal
and exchangeable with the calibration data, P(p(x) <= a) <= a for every a: flagging p <= a gives a false-positive
rate of at most a (averaged over draws of the calibration set; for one calibration set it is within about
sqrt(a (1 - a) / n) of that). Flagging anything at all at level a needs n >= 1/a - 1.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .data import check_columns
from .errors import DiffusekitError
from .samplers import PerSampleNoise

ANOMALY_STREAM = 2  # seed stream for the probes' noise (independent of sampling and likelihood draws)
# Corrected for complexity (images): the one-sided errors. The profile's Mahalanobis distance is two-sided: it already
# flags errors that are unusually low for the normal data (a simple image), which a correction would explain away.
COMPLEXITY_CORRECTED = ("reconstruction", "reconstruction_features")
# An unseen category (a level of a categorical column absent from the normal data) is evidence in itself: each one
# adds ten normal spreads (robust z units) to the row's combined score, and is named in scores.csv.
UNSEEN_PENALTY = 10.0
# The nearest-neighbour score: distance to the NEIGHBOURS nearest normal samples in the network's own representation
# (`Denoiser.representation`) of the sample noised to REPRESENTATION_LEVEL * sigma_data, against at most
# MAX_REFERENCE normal samples the detector keeps (reference.safetensors).
NEIGHBOURS, REPRESENTATION_LEVEL, MAX_REFERENCE = 5, 0.3, 4096


def noise_levels(model_config, k: int = 8) -> list[float]:
    """K levels, geometric from 1% to 2x sigma_data (the range where errors differ between inputs)."""
    lo, hi = max(model_config.sigma_min, 0.02 * model_config.sigma_data), min(model_config.sigma_max, 2 * model_config.sigma_data)
    return torch.logspace(math.log10(lo), math.log10(hi), k).tolist()


def _noise(x, seeds):
    return PerSampleNoise(seeds).randn(x.shape, dtype=x.dtype, device=x.device)


@torch.no_grad()
def error_profile(D, x, levels, seeds):
    """(log mean squared denoising error per level [N, K], per-dimension error averaged over levels [N, ...])."""
    eps = _noise(x, seeds)
    prof, per_dim = [], torch.zeros_like(x)
    for s in levels:
        e = (D(x + s * eps, x.new_tensor(s)) - x) ** 2
        prof.append(e.flatten(1).mean(1).clamp_min(1e-12).log())
        per_dim += e / (s**2 * len(levels))  # relative to the level, so every level weighs alike
    return torch.stack(prof, 1), per_dim


@torch.no_grad()
def reconstruct(D, x, start: float, seeds, steps: int = 8):
    """Noise x to `start`, then deterministic DDIM (Euler in sigma) back to 0 on a geometric grid."""
    from .samplers import sample_ddim

    sig = torch.cat([torch.logspace(math.log10(start), math.log10(start / 50), steps), torch.zeros(1)])
    return sample_ddim(D, x + start * _noise(x, seeds), sig)


def png_bits_per_dim(images_uint8: np.ndarray) -> torch.Tensor:
    """Complexity: the size of each image as a maximally compressed PNG, in bits per dimension."""
    from PIL import Image

    out = []
    for im in images_uint8:
        buf = io.BytesIO()
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(buf, format="PNG", optimize=True)
        out.append(8 * buf.tell() / im.size)
    return torch.tensor(out, dtype=torch.float64)


def default_models(kind: str) -> int:
    """Models a detector trains by default: 3 for tables, whose networks learn their few hundred rows almost by heart,
    each in its own way (the mean of three is a smoother model of normal data, and tables are cheap to score three
    times); 1 for images, whose models are not near memorising and cost the most to score."""
    return 3 if kind == "vector" else 1


def n_draws(d: int) -> int:
    """Noise draws averaged per sample: enough that each level's error averages >= 256 squared errors (at most 16)."""
    return min(16, math.ceil(256 / d))


@torch.no_grad()
def representation(run, x, seeds):
    """The network's representation [N, F] of x noised to REPRESENTATION_LEVEL (per-sample seeds), or None when
    its network has none (a diffusers U-Net)."""
    m = run.model_config
    labels = None if m.num_classes == 0 else torch.full((len(x),), m.num_classes, dtype=torch.long, device=x.device)
    s = REPRESENTATION_LEVEL * m.sigma_data
    rep = run.denoiser.representation(x + s * _noise(x, seeds), s, labels)
    return None if rep is None else rep.float()


def neighbour_distance(q: torch.Tensor, reference: torch.Tensor, k: int = NEIGHBOURS, self_index=None) -> torch.Tensor:
    """Mean Euclidean distance from each row of q to its k nearest rows of reference [N] (float64). self_index[i]:
    the row of reference that is q's row i itself (-1: none), left out (a reference row is not its own neighbour)."""
    out = []
    for i in range(0, len(q), 1024):
        d = torch.cdist(q[i:i + 1024].float(), reference.float())
        if self_index is not None:
            rows, j = torch.arange(len(d)), self_index[i:i + 1024]
            d[rows[j >= 0], j[j >= 0]] = math.inf
        out.append(d.topk(min(k, d.shape[1]), dim=1, largest=False).values.mean(1))
    return torch.cat(out).double()


def raw_scores(run, x, *, seed=0, batch_size=256, features=None, draws=1, device="cpu", progress=False,
               with_representation=False):
    """Every raw score of samples x (model space), each error averaged over `draws` noise draws: dict name -> [N], the
    per-dimension error [N, ...] (on the CPU; the network runs on `device`), for images the PNG complexity, and with
    `with_representation` the network's representation [N, F] (absent if it has none)."""
    from tqdm.auto import tqdm

    from .api import sample_seeds
    from .likelihood import nll, unconditional

    m = run.model_config
    D = unconditional(run.denoiser, m)
    levels = noise_levels(m)
    starts = (0.25 * m.sigma_data, 0.6 * m.sigma_data)
    cols = {"profile": [], "reconstruction": [], "per_dim": []}
    if features is not None:
        cols["reconstruction_features"] = []
    reps = []
    for i in tqdm(range(0, len(x), batch_size), disable=not progress, desc="scoring", unit="batch"):
        xb = x[i:i + batch_size].to(device)
        acc = {}
        f0 = features(xb) if features is not None else None
        for j in range(draws):  # draw 0 keeps the stream of single-draw detectors
            seeds = sample_seeds(seed, len(xb), i, stream=ANOMALY_STREAM + 1000 * j)
            one = {}
            one["profile"], one["per_dim"] = error_profile(D, xb, levels, seeds)
            recs = [reconstruct(D, xb, s, seeds) for s in starts]
            one["reconstruction"] = torch.stack([(r - xb).flatten(1).pow(2).mean(1).clamp_min(1e-12).log()
                                                 for r in recs], 1).mean(1)
            if features is not None:
                one["reconstruction_features"] = torch.stack(
                    [(features(r) - f0).pow(2).mean(1).clamp_min(1e-12).log() for r in recs], 1).mean(1)
            acc = {k: acc.get(k, 0) + v / draws for k, v in one.items()}
            if with_representation and j == 0:
                reps.append(representation(run, xb, seeds))
        for k, v in acc.items():
            cols[k].append(v)
    out = {k: torch.cat(v).double().cpu() for k, v in cols.items()}
    if reps and reps[0] is not None:
        out["representation"] = torch.cat(reps).cpu()
    if run.codec.kind == "image":  # the ELBO (16 stratified levels; 784 dimensions average its noise) less complexity
        lik = nll(run.denoiser, m, run.codec, x, method="elbo", n_levels=16, seed=seed, batch_size=batch_size,
                  device=device)
        out["complexity"] = png_bits_per_dim(run.codec.decode(x))
        out["likelihood"] = lik["bits_per_dim"].double() - out["complexity"]
    else:  # tables: the probability-flow ODE at loose tolerance is cheap in few dimensions, and far sharper than the
        # ELBO (AUROC on breast cancer 0.93 against 0.73 for the same model)
        lik = nll(run.denoiser, m, run.codec, x, method="ode", estimator="rademacher", n_probes=4, rtol=1e-3, atol=1e-3,
                  seed=seed, batch_size=batch_size, device=device)
        out["likelihood"] = lik["bits_per_dim"].double()
    bad = [k for k, v in out.items() if not torch.isfinite(v).all()]
    if bad:  # the inputs were checked: the model's outputs are not (calibration would flag everything, or nothing)
        raise DiffusekitError(f"the model's {', '.join(bad)} scores are not finite (NaN or infinite): is the run's "
                              f"checkpoint sound?")
    return out


def fit_stats(raw: dict, profile_one_sided: bool = False) -> dict:
    """Statistics of the fit split: the profile Gaussian, for images the complexity lines of the reconstruction
    errors, each score's median and robust scale, the combination weights, the per-dimension error scale.
    profile_one_sided: only errors above the normal mean count in the profile's distance (tables: `fit` sets it)."""
    from sklearn.covariance import LedoitWolf

    stats = {"profile_bins": profile_bins(len(raw["profile"]), raw["profile"].shape[1]),
             "profile_one_sided": profile_one_sided}
    prof = binned_profile(raw["profile"], stats)
    lw = LedoitWolf().fit(prof.numpy())
    stats.update(profile_mean=lw.location_.tolist(), profile_precision=lw.precision_.tolist())
    stats["per_dim_mean"] = raw["per_dim"].mean(0).flatten().tolist()
    stats["per_dim_std"] = raw["per_dim"].std(0).clamp_min(1e-8).flatten().tolist()
    comp = component_scores(raw, stats)
    if "complexity" in raw:  # images: each error score relative to normal images of the same complexity
        c = raw["complexity"]
        stats["complexity_line"] = {}
        for k in COMPLEXITY_CORRECTED:
            if k in comp:
                slope = float(torch.cov(torch.stack([c, comp[k]]))[0, 1] / c.var().clamp_min(1e-12))
                stats["complexity_line"][k] = [float(comp[k].mean() - slope * c.mean()), slope]
        comp = component_scores(raw, stats)
    comp["profile"] = _out_of_fold_mahalanobis(prof, profile_one_sided)
    stats["median"], stats["mad"] = {}, {}
    for k, v in comp.items():
        stats["median"][k], stats["mad"][k] = robust_location_scale(v)
    if profile_one_sided:  # about half the normal rows score exactly 0, so its own MAD can be 0: the two-sided spread
        stats["mad"]["profile"] = robust_location_scale(_out_of_fold_mahalanobis(prof))[1]
    z = torch.stack([(v - stats["median"][k]) / stats["mad"][k] for k, v in comp.items()], 1)
    stats["weights"] = dict(zip(comp, min_variance_weights(normal_scores(z)).tolist()))
    return stats


def robust_location_scale(v: torch.Tensor) -> tuple[float, float]:
    """(median, MAD scaled to a Gaussian's standard deviation, at least 1e-8)."""
    med = float(v.median())
    return med, max(1.4826 * float((v - med).abs().median()), 1e-8)


def profile_bins(n_fit: int, k: int) -> int:
    """Dimensions of the profile's Gaussian: at most one per 10 fit samples (at least 2, at most the k levels). Its
    Mahalanobis distance leans on the least-variance directions of the covariance (differences between adjacent
    levels), the worst estimated from few samples: 20 fit rows of a small table cannot pin down 8 dimensions."""
    return max(2, min(k, n_fit // 10))


def binned_profile(prof: torch.Tensor, stats: dict) -> torch.Tensor:
    """The [N, K] profile averaged over runs of adjacent levels into stats["profile_bins"] dimensions (all K for
    detectors fitted before the bins)."""
    bins = stats.get("profile_bins", prof.shape[1])
    return torch.stack([c.mean(1) for c in torch.tensor_split(prof.double(), bins, dim=1)], 1)


def _out_of_fold_mahalanobis(prof, one_sided: bool = False, folds: int = 5) -> torch.Tensor:
    """Mahalanobis distance of each fit-split profile under a Gaussian fitted without it (5 folds). The distances of
    the rows that fitted the Gaussian are too small (with 20 rows in 8 dimensions, by far): scaled by them, the
    profile's z-scores of new normal data would spread wider than the other scores', and the weights would be wrong."""
    from sklearn.covariance import LedoitWolf

    fold = torch.arange(len(prof)) % folds
    out = torch.zeros(len(prof), dtype=torch.float64)
    for f in range(folds):
        lw = LedoitWolf().fit(prof[fold != f].numpy())
        out[fold == f] = _mahalanobis(prof[fold == f], lw.location_, lw.precision_, one_sided)
    return out


def _mahalanobis(v: torch.Tensor, mean, precision, one_sided: bool = False) -> torch.Tensor:
    """sqrt(d' P d), d = v - mean; one_sided: the components of d below 0 (errors lower than normal) set to 0."""
    d = v.double() - torch.as_tensor(mean, dtype=torch.float64)
    if one_sided:
        d = d.clamp_min(0)
    return torch.einsum("nk,kl,nl->n", d, torch.as_tensor(precision, dtype=torch.float64), d).clamp_min(0).sqrt()


def normal_scores(z: torch.Tensor) -> torch.Tensor:
    """Each column of z [N, K] replaced by the standard normal quantile of its rank, Phi^-1((rank - 1/2) / N), tied
    values sharing their mean rank: how the columns move together (their Gaussian copula), without their scales and
    tails. Bounded by +-Phi^-1(1 - 1/2N) (3.3 for N = 900), so no single sample can decide what is computed from it."""
    out = torch.empty(z.shape, dtype=torch.float64)
    for j in range(z.shape[1]):
        v, order = z[:, j].double().sort()
        _, run_of, counts = torch.unique_consecutive(v, return_inverse=True, return_counts=True)
        mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based; a run of ties shares its mean
        out[order, j] = mean_rank[run_of]
    return torch.special.ndtri((out - 0.5) / len(z))


def min_variance_weights(z: torch.Tensor) -> torch.Tensor:
    """argmin_w Var(z w) over w >= 0, sum w = 1, for normal-data scores z [N, K]: exact, by trying every support
    (K is at most 5). The covariance is Ledoit-Wolf's: with 20 fit rows (a small table) the sample covariance is mostly
    noise, and the shrunk one leans towards equal weights."""
    import itertools

    from sklearn.covariance import LedoitWolf

    cov = torch.from_numpy(LedoitWolf().fit(z.double().numpy()).covariance_)
    cov = cov + 1e-9 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov), dtype=cov.dtype)
    best, best_var = None, math.inf
    for k in range(1, len(cov) + 1):
        for support in itertools.combinations(range(len(cov)), k):
            s = list(support)
            w_s = torch.linalg.solve(cov[s][:, s], torch.ones(k, dtype=cov.dtype))
            if (w_s < 0).any():  # the optimum on this support leaves the simplex: a smaller support holds it
                continue
            w = torch.zeros(len(cov), dtype=cov.dtype)
            w[s] = w_s / w_s.sum()
            var = float(w @ cov @ w)
            if var < best_var - 1e-12:
                best, best_var = w, var
    return best


def component_scores(raw: dict, stats: dict) -> dict:
    out = {"profile": _mahalanobis(binned_profile(raw["profile"], stats), stats["profile_mean"],
                                   stats["profile_precision"], stats.get("profile_one_sided", False))}
    for k in ("reconstruction", "reconstruction_features", "likelihood", "neighbours"):
        if k in raw:
            out[k] = raw[k]
    for k, (a, b) in stats.get("complexity_line", {}).items():  # absent: a detector fit without the correction
        out[k] = out[k] - (a + b * raw["complexity"])
    return out


def combine(raw: dict, stats: dict) -> tuple[torch.Tensor, dict]:
    """(the combined score [N], robust z-score of each component)."""
    z = {k: (v - stats["median"][k]) / stats["mad"][k] for k, v in component_scores(raw, stats).items()}
    return sum(stats["weights"][k] * v for k, v in z.items()), z


def conformal_p_values(scores: torch.Tensor, calibration: torch.Tensor) -> torch.Tensor:
    """p = (1 + #{calibration >= score}) / (n + 1), for each score."""
    cal = torch.sort(calibration.double()).values
    above = len(cal) - torch.searchsorted(cal, scores.double(), right=False)
    return (1 + above).double() / (len(cal) + 1)


def _digest(x: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def check_fpr(fpr: float, n_calibration: int):
    if not 0 < fpr < 1:
        raise DiffusekitError(f"--fpr must be in (0, 1), got {fpr:g}")
    need = math.ceil(1 / fpr - 1)
    if n_calibration < need:
        raise DiffusekitError(f"--fpr {fpr:g} needs at least {need} held-out normal samples for calibration; the "
                              f"detector has {n_calibration} (fit it on more normal data, or use a larger --fpr)")


def per_dim_z(raw: dict, stats: dict) -> torch.Tensor:
    """Per-dimension anomaly evidence: the per-dimension error standardized by the fit split's."""
    mean = torch.tensor(stats["per_dim_mean"], dtype=torch.float64).view(raw["per_dim"].shape[1:])
    std = torch.tensor(stats["per_dim_std"], dtype=torch.float64).view(raw["per_dim"].shape[1:])
    return (raw["per_dim"] - mean) / std


# ---------------------------------------------------------------------------------------------------------
# A detector: its run(s), the fit split's statistics and the calibration scores, in one folder


def _feature_fn(data_spec: str, run, device):
    """The shipped classifier's features for images of its data set (Fashion-MNIST, digits), else None."""
    from .evaluate import SHIPPED, WEIGHTS_DIR, features, load_classifier

    name = data_spec.split(":")[0]
    if run.codec.kind != "image" or name not in SHIPPED:
        return None
    model, _ = load_classifier(WEIGHTS_DIR / name)
    model.to(device)
    return lambda x: features(model, x)[0].double()


REFERENCE_FILE = "reference.safetensors"


def _load_reference(f, device) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not f.is_file():
        raise DiffusekitError(f"the detector folder lacks {f.name} (its nearest-neighbour score's normal samples): "
                              f"copy the whole folder, or fit it again")
    try:
        return load_file(str(f))["representation"].float().to(device)
    except (SafetensorError, KeyError, OSError) as e:
        raise DiffusekitError(f"{f} is corrupt: {e}") from None


def default_holdout(n: int) -> float:
    """Fraction of n normal samples `fit` holds out by default: 30%, raised up to half to hold out 40 (20 to fit the
    scores and 20 to calibrate) when the data allow it."""
    return min(0.5, max(0.3, 40 / max(n, 1)))


def _split(n: int, seed: int, n_held: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) of n normal samples: a seeded permutation, its last n_held held out. `fit` and
    `refit` both split here, so that a refit scores the very rows the fit held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n - n_held], perm[n - n_held:]


def _run_paths(path: Path, info):
    """The folders of the runs a detector scores with (relative ones are under its folder)."""
    return [Path(p) if Path(p).is_absolute() else path / p for p in info["runs"]]


def _check_info(info):
    """Raise ValueError on a detector.json whose values are of the wrong type or disagree (a hand edit, a damaged
    file): said at load, in one line, not as a traceback from deep in scoring nor as silently wrong p-values."""
    st, n = info["stats"], info["n_calibration"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n_calibration must be a positive integer, got {n!r}")
    cal = info["calibration"]
    if not isinstance(cal, list) or len(cal) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in cal):
        raise ValueError(f"calibration must be {n} finite numbers (n_calibration)")
    names = set(st["weights"])
    if not names or set(st["median"]) != names or set(st["mad"]) != names:
        raise ValueError("stats.weights, stats.median and stats.mad must name the same scores")
    if not all(isinstance(st[k][c], (int, float)) for k in ("weights", "median", "mad") for c in names):
        raise ValueError("stats.weights, stats.median and stats.mad must hold numbers")
    if not all(0 < st["mad"][c] < math.inf for c in names):
        raise ValueError("stats.mad must be positive (each score's spread)")
    d = len(st["profile_mean"])
    if len(st["profile_precision"]) != d or any(len(row) != d for row in st["profile_precision"]):
        raise ValueError(f"stats.profile_precision must be {d} x {d} (stats.profile_mean has {d} levels)")
    if st.get("profile_bins", d) != d:
        raise ValueError(f"stats.profile_bins must be {d} (stats.profile_mean has {d} levels)")
    for k, lo, hi in (("seed", 0, 2**63 - 1), ("draws", 1, 64)):
        v = info.get(k, lo)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{k} must be an integer in {lo}-{hi}, got {v!r}")
    std = st.get("per_dim_std", [1.0])
    if len(st.get("per_dim_mean", std)) != len(std) or not all(isinstance(v, (int, float)) and v > 0 for v in std):
        raise ValueError("stats.per_dim_mean and stats.per_dim_std must be of one length, the spreads positive")
    if info.get("kind") == "vector" and not info.get("columns"):
        raise ValueError("a table detector must name its columns")


class Detector:
    def __init__(self, path, run, info: dict, device="cpu"):
        self.path, self.run, self.info, self.device = path, run, info, torch.device(device)
        # detectors from before the option compared features whenever a classifier shipped for their data
        self.features = _feature_fn(info["data"], run, self.device) if info.get("features", True) else None
        self.reference = None  # the nearest-neighbour score's normal samples, in the network's representation
        if "neighbours" in info.get("stats", {}):
            self.reference = _load_reference(Path(path) / REFERENCE_FILE, self.device)

    @property
    def stats(self):
        return self.info["stats"]

    @property
    def run_paths(self):
        return _run_paths(self.path, self.info)

    @classmethod
    def load(cls, path, device="cpu"):
        import json

        from .checkpoint import load_ensemble

        f = Path(path) / "detector.json"
        if not f.is_file():
            raise DiffusekitError(f"{path} is not a detector folder (no detector.json; make one with `anomaly fit`)")
        try:
            info = json.loads(f.read_text())
            info["runs"] = info.get("runs") or [info["run"]]  # older detectors: one "run"
            runs = _run_paths(Path(path), info)
            missing = [k for k in ("stats", "calibration", "seed", "n_calibration") if k not in info]
            if not missing and "weights" not in info["stats"]:
                missing = ["stats.weights (a detector from before the weighted combination: fit it again)"]
            if not missing:
                missing = [f"stats.{k}" for k in ("median", "mad", "profile_mean", "profile_precision")
                           if k not in info["stats"]]
            if not missing:
                _check_info(info)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # AttributeError: JSON that is not an object
            raise DiffusekitError(f"{f} is corrupt: {e}") from None
        if missing:
            raise DiffusekitError(f"{f} is incomplete: no {', '.join(missing)}")
        run = load_ensemble(runs, device=device)
        dims = math.prod(run.model_config.in_shape)
        if len(info["stats"].get("per_dim_std", [0] * dims)) != dims:
            raise DiffusekitError(f"{f} is corrupt: stats.per_dim_std must hold one spread per dimension ({dims}) "
                                  f"of its model")
        return cls(Path(path), run, info, device)

    @classmethod
    def fit(cls, data, out, *, run_path=None, data_spec="data", minutes=3.0, steps=0, preset=None, holdout=None, seed=0,
            models=None, batch_size=256, features=False, device="auto", progress=False):
        """Train models on part of the normal data (or reuse run_path: one run or a list, an ensemble), then fit the
        scores on one held-out half and calibrate on the other. data: a `data.Data` of normal samples; holdout: the
        fraction kept from training (default: 30%, or up to half when that is needed to hold out 40 samples);
        models: how many models to train (seeds differ) and score with as one, their mean denoiser (default
        `default_models`; model k has seed `seed + 1000 k`): `minutes` is shared among them, `steps` is per model;
        features: also compare reconstructions in the shipped classifier's feature space (Fashion-MNIST, digits);
        device: auto (CUDA when there is one), cpu, cuda."""
        from .api import save_samples
        from .checkpoint import load_ensemble
        from .evaluate import SHIPPED
        from .train import TrainConfig, Trainer, pick_device

        out = Path(out)
        if features and (data.codec.kind != "image" or data_spec.split(":")[0] not in SHIPPED):
            raise DiffusekitError(f"--features needs images of a data set with a shipped classifier "
                                  f"({', '.join(SHIPPED)}); got {data_spec}")
        if run_path is not None and models is not None:
            raise DiffusekitError("--models trains new models; to score with an ensemble of trained runs give --run "
                                  "once per run")
        models = default_models(data.codec.kind) if models is None else models
        if models < 1:
            raise DiffusekitError(f"--models must be at least 1, got {models}")
        if seed < 0:
            raise DiffusekitError(f"--seed must be >= 0, got {seed}")
        if run_path is None and not (steps >= 0 and minutes >= 0 and math.isfinite(minutes) and (steps or minutes)):
            # said before anything is written: the training's own check would come after normal_train is saved
            raise DiffusekitError(f"give a training budget: --steps N > 0 or --minutes M > 0 (got --steps {steps}, "
                                  f"--minutes {minutes:g})")
        if out.exists() and not out.is_dir():
            raise DiffusekitError(f"--out {out} is an existing file; the detector is a folder (nothing was overwritten)")
        if (out / "detector.json").exists():
            raise DiffusekitError(f"{out} already holds a detector; choose another --out (nothing was overwritten)")
        run_refs = ["run"] + [f"run{k + 1}" for k in range(1, models)]
        left = [p.name for p in (out / "normal_train.npz", out / "normal_train.csv", *(out / r for r in run_refs))
                if p.exists()]
        if run_path is None and left:  # said before anything is written: a retry must not replace them
            raise DiffusekitError(f"{out} holds {', '.join(left)} from a fit that did not finish (no detector.json); "
                                  f"choose another --out or remove them (nothing was overwritten)")
        n = len(data.x)
        if holdout is None:
            holdout = default_holdout(n)
        if run_path is None and not 0 < holdout < 1:
            raise DiffusekitError(f"--holdout must be in (0, 1), got {holdout:g}")
        n_held = n if run_path is not None else int(round(holdout * n))
        if n_held < 40:  # said before any training is spent
            raise DiffusekitError(f"too little held-out normal data: {n_held} of {n} samples; the detector needs at "
                                  f"least 40 (20 to fit the scores, 20 to calibrate; 99 calibration samples for --fpr "
                                  f"0.01): give more normal data{' or a larger --holdout' if n >= 80 else ''}")
        train_idx, held = _split(n, seed, n_held)
        if run_path is None:
            out.mkdir(parents=True, exist_ok=True)
            user = data.codec.decode(data.x[train_idx])
            kind = data.codec.kind
            train_file = out / ("normal_train.npz" if kind == "image" else "normal_train.csv")
            save_samples(str(train_file), user, kind=kind, columns=getattr(data.codec, "columns", None))
            for k, ref in enumerate(run_refs):
                cfg = dict(data=str(train_file), out=str(out / ref), minutes=0.0 if steps else minutes / models,
                           steps=steps, seed=seed + 1000 * k, class_cond="off", device=device)
                if preset:
                    cfg["preset"] = preset
                Trainer(TrainConfig(**cfg), progress=progress).run()
            run_paths = [out / ref for ref in run_refs]
        else:
            run_paths = list(run_path) if isinstance(run_path, (list, tuple)) else [run_path]
            run_refs = [str(Path(p).resolve()) for p in run_paths]
            if len(set(run_refs)) < len(run_refs):
                raise DiffusekitError(f"--run names one run twice: {', '.join(run_refs)}")
        dev = pick_device(device)
        run = load_ensemble(run_paths, device=dev)
        k = len(held) // 2  # the first half fits the scores, the second calibrates
        info = {"data": data_spec, "runs": run_refs, "kind": run.codec.kind,
                "shape": list(run.model_config.in_shape), "columns": getattr(run.codec, "columns", None), "seed": seed,
                "features": bool(features), "data_sha256": _digest(data.x),
                "n_train": n - len(held), "n_fit": k, "n_calibration": len(held) - k}
        det = cls(out, run, info, dev)
        det._fit_scores(data, held, batch_size, progress)
        return det

    def refit(self, data, batch_size=256, progress=False):
        """Fit the scores and calibration again on the same held-out rows of the same normal data `fit` was given,
        keeping the trained model (after a change to the scores). Writes detector.json."""
        i = self.info
        n, n_held = len(data.x), i["n_fit"] + i["n_calibration"]
        if n != i["n_train"] + n_held or i.get("data_sha256", _digest(data.x)) != _digest(data.x):
            raise DiffusekitError(f"refit needs the normal data the detector was fit on ({i['n_train'] + n_held} "
                                  f"samples); got {n} samples{' that differ' if n == i['n_train'] + n_held else ''}")
        self._fit_scores(data, _split(n, i["seed"], n_held)[1], batch_size, progress)

    def _fit_scores(self, data, held, batch_size, progress):
        """Score the held-out rows `held` of the normal data: statistics from the first n_fit, calibration from the
        rest; writes detector.json."""
        from .checkpoint import write_json_atomic
        from .data import Data

        info, k = self.info, self.info["n_fit"]
        info["draws"] = n_draws(math.prod(self.run.model_config.in_shape))
        # a level absent from the training split is unseen here too: its block reads "no level", and it counts
        x, unseen = self.encode(Data(data.x[held], None, data.codec, data.class_names))
        raw = raw_scores(self.run, x, seed=info["seed"], batch_size=batch_size, features=self.features,
                         draws=info["draws"], device=self.device, progress=progress,
                         with_representation=True)  # absent for networks without one (a diffusers U-Net)
        if "representation" in raw:
            raw["neighbours"] = self._fit_reference(data, held, raw.pop("representation"), batch_size)
        info["stats"] = fit_stats({name: v[:k] for name, v in raw.items()},
                                  profile_one_sided=self.run.codec.kind == "vector")
        if self.reference is not None:
            info["stats"]["neighbours"] = {"k": NEIGHBOURS, "level": REPRESENTATION_LEVEL,
                                           "n_reference": len(self.reference)}
        # versions before ensembles and bins read one "run": give it only when they would score this detector the
        # same way, so that they refuse the others ("corrupt") instead of scoring them wrongly. (The unreleased
        # versions of 2026-11-27 that read "runs" but not "profile_one_sided" would score a table detector two-sided.)
        info.pop("run", None)
        if len(info["runs"]) == 1 and info["stats"]["profile_bins"] == raw["profile"].shape[1] and \
                not info["stats"]["profile_one_sided"]:
            info["run"] = info["runs"][0]
        info["calibration"] = sorted(self.combined({name: v[k:] for name, v in raw.items()},
                                                   [(i - k, c, v) for i, c, v in unseen if i >= k])[0].tolist())
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / "detector.json", info)

    def _fit_reference(self, data, held, rep_held, batch_size):
        """Choose the nearest-neighbour score's reference, a seeded subset of at most MAX_REFERENCE of the normal
        samples that are not calibration samples (those the models trained on, and the fit half), write it, and return
        the held-out samples' distances [N]: the fit half's leave-one-out, the calibration half's to the whole
        reference (as new samples will be). The calibration samples never enter the reference: their distances are
        then exchangeable with new normal samples', and the conformal guarantee holds."""
        from .api import sample_seeds
        from .checkpoint import save_tensors_atomic
        from .data import Data

        k = self.info["n_fit"]
        rest = torch.ones(len(data.x), dtype=torch.bool)
        rest[held] = False
        train_rows = rest.nonzero().flatten()
        pick = torch.randperm(len(train_rows) + k, generator=torch.Generator().manual_seed(self.info["seed"]))
        pick = pick[:MAX_REFERENCE].sort().values
        train_pick, fit_pick = train_rows[pick[pick < len(train_rows)]], pick[pick >= len(train_rows)] - len(train_rows)
        parts = [rep_held[fit_pick]]
        if len(train_pick):
            xt = self.encode(Data(data.x[train_pick], None, data.codec, data.class_names))[0]
            parts.insert(0, torch.cat([
                representation(self.run, xt[i:i + batch_size].to(self.device),
                               sample_seeds(self.info["seed"], len(xt[i:i + batch_size]), i, stream=ANOMALY_STREAM + 1)).cpu()
                for i in range(0, len(xt), batch_size)]))
        ref = torch.cat(parts)
        self_index = torch.full((k,), -1, dtype=torch.long)
        self_index[fit_pick] = torch.arange(len(ref) - len(fit_pick), len(ref))
        self.path.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(self.path / REFERENCE_FILE, {"representation": ref.half()})
        self.reference = ref.half().float().to(self.device)  # scored as it is stored
        return torch.cat([neighbour_distance(rep_held[:k].to(self.device), self.reference, self_index=self_index),
                          neighbour_distance(rep_held[k:].to(self.device), self.reference)]).cpu()

    def encode(self, data):
        """(a data.Data's samples in this detector's model space, its unseen categories as (row, column, value)),
        with a one-line error when they do not fit."""
        run = self.run
        if data.codec.kind != run.codec.kind:
            raise DiffusekitError(f"the data hold {data.codec.kind}s but the detector models {run.codec.kind}s")
        if self.info.get("columns"):  # while fitting, "columns" are those of the run's codec
            check_columns(data.codec.columns, self.info["columns"],
                          "the detector was fit on" if "calibration" in self.info else "its model was trained on")
        unseen = []
        if run.codec.kind == "vector":
            return run.codec.encode(data.codec.decode(data.x), unseen=unseen), unseen
        if tuple(data.x.shape[1:]) != tuple(run.model_config.in_shape):
            raise DiffusekitError(f"samples of shape {tuple(data.x.shape[1:])}; the detector expects "
                                  f"{tuple(run.model_config.in_shape)}")
        return run.codec.encode(data.codec.decode(data.x)), unseen

    def combined(self, raw, unseen=()):
        """(combined score with the unseen-category penalty [N], component z-scores)."""
        s, z = combine(raw, self.stats)
        for row, _, _ in unseen:
            s[row] += UNSEEN_PENALTY
        return s, z

    def score(self, x, unseen=(), batch_size=256, progress=False):
        """dict: score [N], p_value [N], z (per component), per_dim_z [N, ...], and for tables per_column_z [N, C]
        (the mean over a categorical column's dimensions). unseen: (row, column, value) of categories the model
        never saw (from `encode`); each adds UNSEEN_PENALTY to its row's score."""
        raw = raw_scores(self.run, x, seed=self.info["seed"], batch_size=batch_size, features=self.features,
                         draws=self.info.get("draws", 1),  # detectors from before the draws used one
                         device=self.device, progress=progress, with_representation=self.reference is not None)
        if self.reference is not None:
            raw["neighbours"] = neighbour_distance(raw.pop("representation").to(self.device), self.reference).cpu()
        s, z = self.combined(raw, unseen)
        out = {"score": s, "p_value": conformal_p_values(s, torch.tensor(self.info["calibration"])), "z": z,
               "per_dim_z": per_dim_z(raw, self.stats)}
        if self.run.codec.kind == "vector":
            idx = torch.tensor(self.run.codec.column_of_dim())
            n_cols = len(self.run.codec.columns)
            total = torch.zeros(len(s), n_cols, dtype=torch.float64).index_add_(1, idx, out["per_dim_z"])
            out["per_column_z"] = total / torch.bincount(idx, minlength=n_cols)
        return out
