"""Likelihood, ELBO and encoding: analytic ground truth (Gaussian mixtures), units, and a trained toy model."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusekit.analytic import GaussianMixture, gmm8
from diffusekit.data import ImageCodec, VectorCodec
from diffusekit.errors import DiffusekitError
from diffusekit.likelihood import NLLConfig, decode, dopri5, elbo_nll, encode, nll, ode_log_likelihood
from diffusekit.losses import DiffusionLoss, noise_distribution

SMIN, SMAX = 0.002, 80.0
F64 = dict(dtype=torch.float64)


def mixture16():
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(2 * torch.randn(5, 16, generator=g, dtype=torch.float64),
                           0.3 + 0.5 * torch.rand(5, generator=g, dtype=torch.float64),
                           0.2 + torch.rand(5, generator=g, dtype=torch.float64))


def shrunk(g, factor=0.9):
    """A wrong denoiser (negative control): the exact one pulled towards 0."""
    return lambda x, s: factor * g.denoiser(x, s)


def test_dopri5_solves_a_linear_ode_both_ways():
    y0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    y1, nfe = dopri5(lambda s, y, rows: -0.5 * y, y0, 0.0, 3.0, rtol=1e-9, atol=1e-9)
    assert torch.allclose(y1, y0 * math.exp(-1.5), rtol=1e-8) and nfe > 7
    back, _ = dopri5(lambda s, y, rows: -0.5 * y, y1, 3.0, 0.0, rtol=1e-9, atol=1e-9)
    assert torch.allclose(back, y0, rtol=1e-8)


def test_dopri5_steps_each_sample_on_its_own():
    # dy/ds = -r s y with a per-sample rate r, picked by the rows f is handed: y(2) = y(0) exp(-2 r)
    rate = torch.tensor([0.5, 8.0, 0.1], dtype=torch.float64)
    evaluated = []

    def f(s, y, rows, rate=rate):
        evaluated.append(len(rows))
        return -(rate[rows] * s)[:, None] * y

    y0 = torch.tensor([[1.0], [1.0], [-2.0]], dtype=torch.float64)
    batch, nfe = dopri5(f, y0, 0.0, 2.0, rtol=1e-5, atol=1e-5)
    assert torch.allclose(batch[:, 0], y0[:, 0] * torch.exp(-2 * rate), atol=1e-5)
    assert nfe[1] > nfe[0] > nfe[2]  # the stiff sample takes more steps; the others do not pay for it
    assert sum(evaluated) == nfe.sum() and min(evaluated) == 1  # finished samples are not evaluated again
    assert y0[1, 0] == 1.0  # the caller's tensor is left alone
    for i in range(3):  # alone, a sample takes the same steps to the same value
        alone, k = dopri5(lambda s, y, rows: f(s, y, rows, rate[i:i + 1]), y0[i:i + 1], 0.0, 2.0, rtol=1e-5, atol=1e-5)
        assert torch.equal(alone[0], batch[i]) and k[0] == nfe[i]


@pytest.mark.parametrize("gm", [gmm8(), mixture16()], ids=["2-D", "16-D"])
def test_ode_likelihood_matches_the_true_log_density(gm):
    x = gm.sample(24, torch.Generator().manual_seed(1))
    true = gm.log_prob(x)
    r = ode_log_likelihood(gm.denoiser, x, SMIN, SMAX, estimator="exact", rtol=1e-6, atol=1e-6, **F64)
    assert float((r["logp"] - true).abs().max()) / gm.dim < 0.01
    wrong = ode_log_likelihood(shrunk(gm), x, SMIN, SMAX, estimator="exact", **F64)["logp"]
    assert float((wrong - true).abs().mean()) / gm.dim > 0.05  # the check can fail


class FixedProbe:
    """Every sample gets the same probe v."""

    def __init__(self, v):
        self.v = torch.tensor(v, dtype=torch.float64)

    def randn(self, shape, dtype=torch.float32, device="cpu"):
        return self.v.expand(*shape).to(dtype)


def test_hutchinson_averages_to_the_exact_trace():
    gm = gmm8()
    x = gm.sample(200, torch.Generator().manual_seed(2))
    exact = ode_log_likelihood(gm.denoiser, x, SMIN, SMAX, estimator="exact", **F64)["logp"]
    # over the 4 Rademacher patterns (two up to sign), the estimate averages to the exact trace
    a, b = (ode_log_likelihood(gm.denoiser, x[:8], SMIN, SMAX, estimator="rademacher", noise=FixedProbe(v), **F64)["logp"]
            for v in ([1.0, 1.0], [1.0, -1.0]))
    assert (a - exact[:8]).abs().max() > 0.05 and torch.allclose((a + b) / 2, exact[:8], atol=1e-3)
    one = ode_log_likelihood(gm.denoiser, x, SMIN, SMAX, estimator="rademacher", n_probes=1, **F64)["logp"] - exact
    assert abs(float(one.mean())) < 3 * float(one.std()) / math.sqrt(len(x))
    four = ode_log_likelihood(gm.denoiser, x, SMIN, SMAX, estimator="rademacher", n_probes=4, **F64)["logp"] - exact
    assert float(four.std()) < 0.7 * float(one.std())
    # Gaussian probes also estimate diagonal terms: far noisier here, why Rademacher is the default
    gauss = ode_log_likelihood(gm.denoiser, x, SMIN, SMAX, estimator="gaussian", **F64)["logp"] - exact
    assert float(gauss.std()) > 2 * float(one.std())


@pytest.mark.parametrize("gm", [gmm8(), mixture16()], ids=["2-D", "16-D"])
def test_elbo_bounds_the_exact_nll_and_is_tight_for_the_true_denoiser(gm):
    x = gm.sample(64, torch.Generator().manual_seed(3))
    exact_nll = -gm.log_prob(x)
    bound = elbo_nll(gm.denoiser, x, SMIN, SMAX, n_levels=64, **F64)
    gap = bound - exact_nll
    se = float(gap.std()) / math.sqrt(len(x))
    assert abs(float(gap.mean())) < 3 * se + 0.01 * gm.dim  # the true model: no gap beyond Monte Carlo error
    worse = elbo_nll(shrunk(gm, 0.7), x, SMIN, SMAX, n_levels=64, **F64) - exact_nll
    assert float(worse.mean()) > 3 * float(worse.std()) / math.sqrt(len(x))  # a wrong model: strictly above


def test_likelihood_weighted_loss_estimates_the_elbo_diffusion_term():
    gm = gmm8()
    x = gm.sample(4000, torch.Generator().manual_seed(4))
    loss = DiffusionLoss(noise_distribution("loguniform", sigma_min=SMIN, sigma_max=SMAX), "likelihood")
    per_dim = loss(lambda z, s, labels=None: gm.denoiser(z, s), x, generator=torch.Generator().manual_seed(5))
    d = gm.dim
    from_loss = float(per_dim.mean()) * d + 0.5 * d * math.log(2 * math.pi * math.e * SMIN**2)
    assert abs(from_loss - float(-gm.log_prob(x).mean())) < 4 * float(per_dim.std()) * d / math.sqrt(len(x))
    with pytest.raises(DiffusekitError, match="log-uniform"):
        DiffusionLoss(noise_distribution("lognormal"), "likelihood")


def test_encode_decode_round_trip_and_latents_are_standard_normal():
    gm = mixture16()
    x = gm.sample(256, torch.Generator().manual_seed(6)).float()
    z, nfe = encode(gm.denoiser, x, SMIN, SMAX, rtol=1e-7, atol=1e-7)
    assert abs(float(z.std()) - 1) < 0.05 and abs(float(z.mean())) < 0.05 and nfe > 20
    back, _ = decode(gm.denoiser, z, SMIN, SMAX, rtol=1e-7, atol=1e-7)
    assert float((back - x).norm() / x.norm()) < 1e-4
    def ddim_round_trip(steps):
        zd, _ = encode(gm.denoiser, x, SMIN, SMAX, method="ddim", steps=steps)
        back_d, _ = decode(gm.denoiser, zd, SMIN, SMAX, method="ddim", steps=steps)
        return float((back_d - x).norm() / x.norm())

    coarse, fine = ddim_round_trip(25), ddim_round_trip(200)
    assert 1e-4 < fine < coarse / 2  # DDIM inversion is approximate, and converges with the steps
    with pytest.raises(DiffusekitError, match="NaN"):
        decode(gm.denoiser, torch.full_like(z, float("nan")), SMIN, SMAX)
    with pytest.raises(DiffusekitError, match="tolerances"):
        encode(gm.denoiser, x, SMIN, SMAX, rtol=0.0)


def nll_(D, cfg, codec, x, labels=None, **options):
    return nll(D, cfg, codec, x, NLLConfig(**options), labels=labels)


def stub_config(num_classes=0):
    return SimpleNamespace(sigma_min=SMIN, sigma_max=SMAX, num_classes=num_classes)


def test_nll_reports_data_units_for_vectors_and_is_batch_independent():
    gm = gmm8()
    raw = gm.sample(12, torch.Generator().manual_seed(7))
    codec = VectorCodec(mean=[1.0, -2.0], std=[3.0, 0.5])
    x = codec.encode(raw.numpy() * codec.std + codec.mean)  # model space holds the mixture itself
    r = nll_(lambda z, s: gm.denoiser(z.double(), s).float(), stub_config(), codec, x, batch_size=5)
    expected = -gm.log_prob(raw) + math.log(3.0 * 0.5)  # density of the unstandardized values
    assert torch.allclose(r["nats"], expected, atol=0.02 * 2)
    assert torch.allclose(r["bits_per_dim"], r["nats"] / (2 * math.log(2)))
    for tol in (1e-5, 1e-3):  # each sample has its own step sizes: even a loose solve is batch-independent
        one, all_ = (nll_(lambda z, s: gm.denoiser(z.double(), s).float(), stub_config(), codec, x, batch_size=b,
                         rtol=tol, atol=tol) for b in (1, 12))
        assert torch.allclose(one["nats"], all_["nats"], rtol=0, atol=1e-9) and torch.equal(one["nfe"], all_["nfe"])


def test_class_conditional_nll_follows_each_samples_label():
    # class 0 a broad Gaussian, class 1 the 8-mode ring (more solver steps): rows finish at different times, and the
    # solver must keep handing each remaining row its own label
    classes = [GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)), gmm8()]

    def D(z, s, labels):
        out = torch.stack([c.denoiser(z.double(), s) for c in classes])  # [class, N, 2]
        return out[labels, torch.arange(len(z))].float()

    labels = torch.tensor([0, 1] * 6)
    x = gmm8().sample(12, torch.Generator().manual_seed(3)).float()
    r = nll_(D, stub_config(num_classes=2), VectorCodec([0, 0], [1, 1]), x, labels=labels, batch_size=12)
    expected = torch.cat([-classes[int(c)].log_prob(xi[None].double()) for xi, c in zip(x, labels)])
    assert torch.allclose(r["nats"], expected, atol=0.04), (r["nats"], expected)
    assert r["nfe"][labels == 1].min() > r["nfe"][labels == 0].max()


def test_image_nll_is_the_dequantized_discrete_bound_and_seeded_per_sample():
    gm = GaussianMixture(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64))
    D = lambda z, s: gm.denoiser(z.flatten(1).double(), s).float().reshape(z.shape)  # noqa: E731
    codec = ImageCodec(1, 2)
    u8 = np.random.default_rng(0).integers(100, 156, size=(10, 2, 2, 1), dtype=np.uint8)
    x = codec.encode(u8)
    kw = dict(estimator="rademacher", probes=2)
    r = nll_(D, stub_config(), codec, x, batch_size=3, **kw)
    # a level's bin has width 2/255 in [-1, 1]: nats = -ln p(x + u) - d ln(2/255); bits = nats / (d ln 2)
    cont = nll_(D, stub_config(), codec, x, batch_size=3, dequantize=False, estimator="exact")["nats"]
    assert torch.allclose(cont - 4 * math.log(127.5), -gm.log_prob(x.flatten(1)), atol=0.05)
    assert abs(float(r["nats"].mean() - cont.mean())) < 0.3  # dequantizing within a tiny bin moves little
    assert torch.allclose(r["bits_per_dim"], r["nats"] / (4 * math.log(2)))
    again = nll_(D, stub_config(), codec, x, batch_size=10, **kw)
    assert torch.allclose(r["nats"], again["nats"], atol=1e-3)  # probes and dequantization are per sample
    other = nll_(D, stub_config(), codec, x, batch_size=10, seed=1, **kw)
    assert (r["nats"] - other["nats"]).abs().max() > 0.01


def test_bad_inputs_are_clear_errors():
    gm = gmm8()
    x = gm.sample(4).float()
    codec = VectorCodec([0, 0], [1, 1])
    with pytest.raises(DiffusekitError, match="NaN"):
        nll_(gm.denoiser, stub_config(), codec, torch.full_like(x, float("nan")))
    with pytest.raises(DiffusekitError, match="method"):
        nll_(gm.denoiser, stub_config(), codec, x, method="bogus")
    with pytest.raises(DiffusekitError, match="tolerances"):
        nll_(gm.denoiser, stub_config(), codec, x, rtol=-1.0)
    with pytest.raises(DiffusekitError, match="probes"):
        ode_log_likelihood(gm.denoiser, torch.zeros(2, 64), SMIN, SMAX, estimator="rademacher", n_probes=0)
    # a model whose outputs are not finite (a spoiled checkpoint), for one sample of the batch: said, not integrated
    spoiled = lambda z, s: torch.where(z[:, :1] > 0, float("nan"), gm.denoiser(z, s))  # noqa: E731
    with pytest.raises(DiffusekitError, match="ODE produced NaN or infinite"):
        encode(spoiled, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), SMIN, SMAX)


@pytest.mark.slow
def test_trained_gmm8_nll_is_within_a_tenth_of_a_nat_of_the_true_entropy(tmp_path):
    # the default recipe on toy:gmm8 for 5,000 steps (about a minute on 2 cores); scored on fresh draws of the true
    # mixture, paired with its exact log-density on the same points (the Monte Carlo entropy)
    from diffusekit import load as load_run
    from diffusekit.data.toys import toy_data
    from diffusekit.likelihood import summarize
    from diffusekit.train import TrainConfig, Trainer

    Trainer(TrainConfig(data="toy:gmm8", out=str(tmp_path / "g"), steps=5000, seed=0), progress=False).run()
    run = load_run(tmp_path / "g")
    pts = toy_data("gmm8", 1000, seed=123)  # the training set is seed 0
    entropy = -gmm8().log_prob(torch.as_tensor(pts))
    r = nll_(run.denoiser, run.model_config, run.codec, run.codec.encode(pts), estimator="exact", batch_size=1000)
    gap, se = summarize(r["nats"] - entropy)
    assert abs(gap) < 0.1, (gap, se)
    assert float(entropy.mean()) == pytest.approx(math.log(8) + math.log(2 * math.pi * math.e * 0.25), abs=0.1)
