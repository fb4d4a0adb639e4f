"""Consistency tuning (`distill`, losses.ConsistencyLoss) and the consistency sampler: the sampler reproduces a Gaussian
mixture in 1 and 2 calls with the mixture's exact consistency function (and fails with its posterior mean, the negative
control), the loss's levels and its denoising limit, and a distilled toy run that samples in one call far better than
its teacher does, through the library and the command line."""
import math

import pytest
import torch

import diffusekit as dk
from diffusekit.analytic import gmm8
from diffusekit.losses import ConsistencyLoss, LogNormalSigma
from diffusekit.metrics import energy_distance
from diffusekit.runtime import sample_seeds
from diffusekit.samplers import generate, sample_heun
from diffusekit.schedules import karras_sigmas
from test_cli import cli, one_line_error
from test_samplers import GMM, N, check_mixture, reference  # noqa: F401 (a fixture)


def consistency_function(x, sigma):
    """The exact consistency function of GMM: x's probability-flow path solved to sigma = 0.002 by 60 Heun steps of
    the mixture's exact denoiser (then the last, negligible, step to 0 is the denoiser's)."""
    s = float(sigma)
    grid = karras_sigmas(60, 0.002, s)
    return sample_heun(lambda y, t: GMM.denoiser(y, t), x.double(), grid).to(x.dtype)


@pytest.mark.parametrize("steps", [1, 2])
def test_exact_consistency_function_reproduces_the_mixture(steps, reference):  # noqa: F811
    sigmas = torch.tensor([80.0, 0.821, 0.0]) if steps == 2 else torch.tensor([80.0, 0.0])
    x = generate(consistency_function, "consistency", (N, 2), sigmas, seeds=sample_seeds(0, N)).double()
    check_mixture(x, reference, f"consistency-{steps}")


def test_posterior_mean_is_not_a_consistency_function(reference):  # noqa: F811
    # the negative control: one jump with the denoiser (the posterior mean) lands near the data's mean
    x = generate(lambda y, t: GMM.denoiser(y, t), "consistency", (N, 2), torch.tensor([80.0, 0.0]),
                 seeds=sample_seeds(0, N)).double()
    with pytest.raises(AssertionError):
        check_mixture(x, reference, "posterior-mean")


def test_lower_level():
    t = torch.tensor([0.01, 0.5, 2.0, 10.0, 80.0])
    near = ConsistencyLoss(None, q=256).lower_level(t)
    ratio = 1 - (1 + 8 / (1 + torch.exp(t))) / 256
    torch.testing.assert_close(near, t * ratio)
    assert ((near < t) & (near > 0.98 * t)).all()
    coarse = ConsistencyLoss(None, q=2).lower_level(t)  # ECT's first stage: r = 0 near 0, r -> t / 2 far from it
    assert coarse[0] == 0 and coarse[1] == 0 and abs(float(coarse[-1]) - 40.0) < 1e-6


def test_loss_at_r_zero_is_the_denoising_error():
    # where r = 0 the target is the clean x0: the loss is ||D(x0 + t eps, t) - x0|| / t, with a gradient
    loss = ConsistencyLoss(LogNormalSigma(), q=2)
    w = torch.tensor(0.7, requires_grad=True)
    D = lambda x, s, labels=None: w * x  # noqa: E731
    x0, eps, t = torch.randn(4, 3), torch.randn(4, 3), torch.full((4,), 0.3)
    got = loss(D, x0, sigma=t, eps=eps)
    torch.testing.assert_close(got, (w * (x0 + 0.3 * eps) - x0).norm(dim=1) / 0.3)
    got.sum().backward()
    assert w.grad is not None and w.grad != 0


def test_target_carries_no_gradient():
    # D = w x: the online output w (x0 + t eps) against the target w (x0 + r eps) held fixed, so
    # d loss / d w = (x_t . (x_t w - x_r w)) / (|w (x_t - x_r)| (t - r)) with only the first w varying
    loss = ConsistencyLoss(LogNormalSigma(), q=256)
    w = torch.tensor(1.3, requires_grad=True)
    x0, eps, t = torch.randn(1, 5), torch.randn(1, 5), torch.tensor([2.0])
    r = loss.lower_level(t)
    loss(lambda x, s, labels=None: w * x, x0, sigma=t, eps=eps).sum().backward()
    xt, xr = x0 + t * eps, x0 + r * eps
    diff = (1.3 * xt - 1.3 * xr).reshape(-1)
    want = float((xt.reshape(-1) @ diff) / diff.norm() / (t - r))
    assert math.isclose(float(w.grad), want, rel_tol=1e-4)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "teacher"
    return dk.train("toy:gmm8:4000", out=out, steps=500, preset="tiny", progress=False)


def one_call_distance(run, truth):
    x = torch.tensor(run.sample(2000, sampler="consistency", steps=1, seed=1).to_numpy())
    return energy_distance(x, truth)


def test_distilled_run_samples_in_one_call(teacher, tmp_path):
    truth = gmm8().sample(2000, torch.Generator().manual_seed(5)).float()
    before = one_call_distance(teacher, truth)
    fast = dk.distill(teacher.path, tmp_path / "ct", steps=300, lr=1e-3, progress=False)
    after = one_call_distance(fast, truth)
    assert after < 0.2 * before, (before, after)
    # a run like any other: its own sampling defaults, said; what needs a denoiser says so
    assert fast.objective == "consistency" and "consistency" in fast.sampling() and "2 steps" in fast.sampling()
    assert len(fast.sample(8)) == 8
    assert fast.sampling(sampler="auto") == fast.sampling()  # auto is the run's own default
    assert fast._sample_config({"sampler": "heun"}).sigma_min is None  # its grid goes with its sampler only
    assert fast._sample_config({"steps": 1}).sigma_min == 0.821
    assert "distilled" in fast.describe()
    with pytest.raises(dk.DiffusekitError, match="consistency model"):
        fast.nll("toy:gmm8:10")
    with pytest.raises(dk.DiffusekitError, match="already a consistency model"):
        dk.distill(fast.path, tmp_path / "again", steps=1, progress=False)


def test_distill_cli(teacher, tmp_path, capsys):
    out = tmp_path / "ct"
    assert cli("distill", teacher.path, "--out", out, "--steps", 5, "--no-progress") == 0
    assert cli("sample", out, "--n", 16, "--out", tmp_path / "s.csv", "--no-progress") == 0
    assert "sampler consistency, 2 steps" in capsys.readouterr().out
    one_line_error(capsys, cli("distill", teacher.path, "--out", tmp_path / "x", "--no-progress"), "budget")
    one_line_error(capsys, cli("distill", teacher.path, "--out", out, "--steps", 5, "--no-progress"), "already holds")
    one_line_error(capsys, cli("nll", out, "--data", "toy:gmm8:10", "--no-progress"), "consistency model")
