"""Anomaly detection from a model of normal data: scores that are functions of the denoiser, and split-conformal
calibration of their combination (docs/design.md: tasks wrap the denoiser).

Scores, each higher = less like the normal data:
- ``profile``: the denoising-error profile, log E||D(x + sigma eps, sigma) - x||^2 / d at K noise levels, scored by
  its Mahalanobis distance under a Gaussian (Ledoit-Wolf shrinkage) fitted on held-out normal data (adjacent levels
  averaged to keep at least 10 fit samples per dimension: `profile_bins`). For tables the distance is one-sided: levels
  where the error is below the normal mean count as 0. A table's network learns its few hundred rows by heart and
  denoises them (and any copy of them) far better than held-out normal rows; two-sided, that flagged most of the rows
  it was trained on as anomalies. Images keep the two-sided distance (below);
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
  good as the k-NN distance on the standardized columns on breast cancer, wine and digits, far weaker on some other
  tables (spambase);
- ``input_neighbours`` (tables): the same distance in the standardized columns themselves, against the same reference
  rows: the k-NN distance, which leads wide tabular benchmarks (ADBench), as a component of the combination.
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
images (a few atypical ones far from every reference): its variance on the fit split is well above the others', and the
least-variance weights starved it on the one-class tasks where it separates best. The ranks keep how the scores move together and drop their tails.
Tables take the plain mean of the z-scores instead. The least-variance premise (an anomaly moves every score alike)
fails there when one score carries no information but is uncorrelated with the rest (the representation's neighbours
on spambase: AUROC 0.51): being independent, it got the largest weight. And a table's fit half may hold 20 rows,
few to estimate five scores' covariance from.
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

import hashlib
import io
import itertools
import math

import numpy as np
import torch
from PIL import Image

from .errors import DiffusekitError
from .likelihood import NLLConfig, nll
from .precond import unconditional
from .runtime import gather, map_batches, sample_seeds, shard
from .samplers import PerSampleNoise, sample_ddim

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
    sig = torch.cat([torch.logspace(math.log10(start), math.log10(start / 50), steps), torch.zeros(1)])
    return sample_ddim(D, x + start * _noise(x, seeds), sig)


def png_bits_per_dim(images_uint8: np.ndarray) -> torch.Tensor:
    """Complexity: the size of each image as a maximally compressed PNG, in bits per dimension."""
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
    if m.kind == "text":  # tokens: the states of the sequence as it is, averaged over positions
        from .data.text import UNK

        return run.denoiser.net.representation(torch.where(x == UNK, run.denoiser.mask, x)).mean(1).float()
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


def raw_scores(run, x, *, seed=0, batch_size=256, features=None, draws=1, progress=False, with_representation=False,
               start=0):
    """Every raw score of samples x (model space), each error averaged over `draws` noise draws: dict name -> [N], the
    per-dimension error [N, ...] (on the CPU; the network runs on the run's device), for images the PNG complexity,
    and with `with_representation` the network's representation [N, F] (absent if it has none). start: the index of
    x[0] in a longer stream of samples scored in parts (its noise draws are those of that index). Sharded over torchrun
    ranks and gathered: every rank returns every sample's scores, the same as one process's."""
    m, device = run.model_config, run.device
    mine, rank, world = shard(len(x))
    if run.codec.kind == "text":
        return _text_scores(run, x, seed, batch_size, progress, with_representation, start, mine, rank, world)
    D = unconditional(run.denoiser, m)
    levels = noise_levels(m)
    starts = (0.25 * m.sigma_data, 0.6 * m.sigma_data)

    def batch(idx, _):
        xb = x[idx].to(device)
        acc, rep = {}, None
        f0 = features(xb) if features is not None else None
        for j in range(draws):  # draw 0 keeps the stream of single-draw detectors
            seeds = [sample_seeds(seed, 1, start + i, stream=ANOMALY_STREAM + 1000 * j)[0] for i in idx.tolist()]
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
                rep = representation(run, xb, seeds)
        return acc if rep is None else {**acc, "representation": rep}

    out = _scored(batch, len(x), batch_size, mine, world, progress and rank == 0)
    if run.codec.kind == "image":  # the ELBO (16 stratified levels; 784 dimensions average its noise) less complexity
        lik = nll(run.denoiser, m, run.codec, x, NLLConfig(method="elbo", levels=16, seed=seed, batch_size=batch_size),
                  device=device, start=start)
        out["complexity"] = png_bits_per_dim(run.codec.decode(x))
        out["likelihood"] = lik["bits_per_dim"].double() - out["complexity"]
    else:  # tables: the probability-flow ODE at loose tolerance is cheap in few dimensions, and far sharper than the
        # ELBO (AUROC on breast cancer 0.93 against 0.73 for the same model)
        lik = nll(run.denoiser, m, run.codec, x, NLLConfig(estimator="rademacher", probes=4, rtol=1e-3, atol=1e-3,
                                                           seed=seed, batch_size=batch_size), device=device,
                  start=start)
        out["likelihood"] = lik["bits_per_dim"].double()
    return _finite(out)


TEXT_LEVELS = 16  # masking levels of a text score: the profile's, and the bound's average


def _text_scores(run, x, seed, batch_size, progress, with_representation, start, mine, rank, world) -> dict:
    """Masked diffusion's scores of token sequences: the bound's integrand at TEXT_LEVELS masking levels (the
    profile, log nats per character), their mean (likelihood, the ELBO in bits per character), each position's
    -log p (per_dim: the characters least expected), and the mean of the network's states (representation)."""
    from .data.text import UNK
    from .masked import masked_profile

    def batch(idx, _):
        xb = x[idx].to(run.device)
        seeds = [sample_seeds(seed, 1, start + i, stream=ANOMALY_STREAM)[0] for i in idx.tolist()]
        per_level, per_pos = masked_profile(run.denoiser, xb, TEXT_LEVELS, seeds, unknown=UNK)
        out = {"profile": per_level.clamp_min(1e-6).log(), "per_dim": per_pos,
               "likelihood": per_level.mean(1) / math.log(2)}
        if with_representation:
            out["representation"] = representation(run, xb, seeds)
        return out

    return _finite(_scored(batch, len(x), batch_size, mine, world, progress and rank == 0))


def _scored(batch, n, batch_size, mine, world, progress) -> dict:
    """batch over this rank's samples `mine`, gathered from every rank in sample order; scores as float64."""
    mapped = map_batches(batch, n, batch_size, indices=mine, desc="scoring", progress=progress)
    return {k: v.double() if k != "representation" else v for k, v in gather(mapped, mine, n, world).items()}


def _finite(out: dict) -> dict:
    bad = [k for k, v in out.items() if not torch.isfinite(v).all()]
    if bad:  # the inputs were checked: the model's outputs are not (calibration would flag everything, or nothing)
        raise DiffusekitError(f"the model's {', '.join(bad)} scores are not finite (NaN or infinite): is the run's "
                              f"checkpoint sound?")
    return out


def fit_stats(raw: dict, profile_one_sided: bool = False, weights: str = "least-variance") -> dict:
    """Statistics of the fit split: the profile Gaussian, for images the complexity lines of the reconstruction
    errors, each score's median and robust scale, the combination weights, the per-dimension error scale.
    profile_one_sided: only errors above the normal mean count in the profile's distance (tables: `fit` sets it).
    weights: "least-variance" (`min_variance_weights`, images) or "equal" (the plain mean of the z-scores, tables)."""
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
    w = (min_variance_weights(normal_scores(z)) if weights == "least-variance"
         else torch.full((len(comp),), 1 / len(comp), dtype=torch.float64))
    stats["weights"] = dict(zip(comp, w.tolist()))
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
    """The [N, K] profile averaged over runs of adjacent levels into stats["profile_bins"] dimensions."""
    bins = stats["profile_bins"]
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
                                   stats["profile_precision"], stats["profile_one_sided"])}
    for k in ("reconstruction", "reconstruction_features", "likelihood", "neighbours", "input_neighbours"):
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
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def flag_rate(fpr: float, n_calibration: int) -> tuple[float, str | None]:
    """(the rate to flag at, a note or None). With n calibration scores the smallest p-value is 1 / (n + 1): a
    smaller fpr would flag nothing, so the flags fall back to that rate and the note says so (scores and p-values are
    the same whatever the rate)."""
    try:
        ok = 0 < float(fpr) < 1 and not isinstance(fpr, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DiffusekitError(f"fpr must be a number in (0, 1), got {fpr!r}", "fpr")
    fpr = float(fpr)
    lowest = 1 / (n_calibration + 1)
    if fpr >= lowest:
        return fpr, None
    return lowest, (f"fpr {fpr:g} needs at least {math.ceil(1 / fpr - 1)} held-out normal samples for calibration; "
                    f"the detector has {n_calibration}, so the flags are at the smallest rate it supports, "
                    f"{lowest:.4g} (fit it on more normal data for a lower rate)")


def per_dim_z(raw: dict, stats: dict) -> torch.Tensor:
    """Per-dimension anomaly evidence: the per-dimension error standardized by the fit split's."""
    mean = torch.tensor(stats["per_dim_mean"], dtype=torch.float64).view(raw["per_dim"].shape[1:])
    std = torch.tensor(stats["per_dim_std"], dtype=torch.float64).view(raw["per_dim"].shape[1:])
    return (raw["per_dim"] - mean) / std


# ---------------------------------------------------------------------------------------------------------
# A detector: its run(s), the fit split's statistics and the calibration scores, in one folder


def default_holdout(n: int) -> float:
    """Fraction of n normal samples `fit` holds out by default: 30%, raised to hold out 40 (20 to fit the scores and
    20 to calibrate) where that leaves at least 30 to train on (or half of them)."""
    n = max(n, 1)
    return min(max(0.5, 1 - 30 / n), max(0.3, 40 / n))


def _split(n: int, seed: int, n_held: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) of n normal samples: a seeded permutation, its last n_held held out. `fit` and
    `refit` both split here, so that a refit scores the very rows the fit held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n - n_held], perm[n - n_held:]
