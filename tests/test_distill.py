"""Consistency distillation (`distill`: losses.TeacherPathLoss, the default, and ECT's losses.ConsistencyLoss) and the
consistency sampler: the sampler reproduces a Gaussian mixture in 1 and 2 calls with the mixture's exact consistency
function (and fails with its posterior mean, the negative control); the teacher's path and its loss on a Gaussian,
whose consistency function is known in closed form; ECT's levels and its denoising limit; and a distilled toy run that
samples in one call far better than its teacher does, by either target, through the library and the command line."""
import math
import shutil

import pytest
import torch

import diffusekit as dk
from diffusekit.analytic import gmm8
from diffusekit.losses import ConsistencyLoss, LogNormalSigma, TeacherPathLoss
from diffusekit.model import ModelConfig
from diffusekit.metrics import energy_distance
from diffusekit.runtime import sample_seeds
from diffusekit.samplers import generate, ode_path, sample_dpmpp_2m, sample_heun, sample_sa_solver
from diffusekit.schedules import karras_sigmas, sigma_grid
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


# N(0, S^2 I) in 2-D: D(x, sigma) = x S^2 / (S^2 + sigma^2), and its probability-flow path keeps x / sqrt(S^2 + sigma^2),
# so the consistency function (the path's clean end) is x S / sqrt(S^2 + sigma^2)
S = 0.7
VECTOR = ModelConfig(kind="vector", in_shape=[2])


def gaussian_denoiser(x, sigma, labels=None):
    return x * S**2 / (S**2 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1)) ** 2)


def gaussian_consistency(x, sigma, labels=None):
    return x * S / (S**2 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2).sqrt()


def test_ode_path_is_the_default_few_step_solve():
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states, levels, end = ode_path(gaussian_denoiser, VECTOR, eps, 8)
    assert len(states) == len(levels) == 8 and all(len(v) == 5 for v in levels)
    # a vector below 10 steps takes DPM-Solver++(2M) on the karras grid: the same end as that solve
    sigmas = sigma_grid(VECTOR, 8, "karras")
    torch.testing.assert_close(torch.stack(levels)[:, 0], sigmas[:-1])
    torch.testing.assert_close(end, sample_dpmpp_2m(gaussian_denoiser, eps * 80.0, sigmas))
    # an image takes its few-step default: SA-Solver's ODE on the karras grid ending at sigma 0.2
    image = ModelConfig(kind="image", in_shape=[1, 4, 4])
    eps = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    states, levels, end = ode_path(gaussian_denoiser, image, eps, 5)
    sigmas = sigma_grid(image, 5, "karras", rho=10.0, sigma_min=0.2)
    torch.testing.assert_close(torch.stack(levels)[:, 0], sigmas[:-1])
    torch.testing.assert_close(end, sample_sa_solver(gaussian_denoiser, eps * 80.0, sigmas, eta=0.0))
    with pytest.raises(dk.DiffusekitError, match="fewer than"):
        ode_path(gaussian_denoiser, VECTOR, eps, 10)


def exact_path(eps, labels=None, levels=(80.0, 10.0, 1.0, 0.1)):
    """The Gaussian's probability-flow path from 80 eps, in closed form: its states at `levels` and its clean end."""
    x = 80.0 * eps
    at = lambda s: x * math.sqrt(S**2 + s**2) / math.sqrt(S**2 + 80.0**2)  # noqa: E731
    return [at(s) for s in levels], [eps.new_full((len(eps),), s) for s in levels], at(0.0)


def test_teacher_path_loss_vanishes_at_the_consistency_function():
    loss = TeacherPathLoss(LogNormalSigma(), exact_path, 4)
    x0, eps = torch.zeros(16, 2, dtype=torch.float64), torch.randn(16, 2, generator=torch.Generator().manual_seed(1),
                                                                   dtype=torch.float64)
    exact = loss(gaussian_consistency, x0, eps=eps)
    assert exact.shape == (16,) and float(exact.max()) < 1e-20
    # the negative control: the posterior mean (the teacher itself) is far from its own paths' ends at high noise
    assert float(loss(gaussian_denoiser, x0, eps=eps).max()) > 0.1
    # the gradient reaches the student only; an odd batch takes ceil(n / k) paths, path-major
    # (w D* - end)^2 = (w - 1)^2 end^2 for every state: d/dw of the mean over dimensions, summed, at w = 1.1
    w = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    got = loss(lambda x, s, labels=None: w * gaussian_consistency(x, s), x0[:7], eps=eps[:7])
    assert got.shape == (7,)
    got.sum().backward()
    ends = exact_path(eps[:2])[2].repeat_interleave(4, 0)[:7]
    assert math.isclose(float(w.grad), float((2 * 0.1 * ends**2).mean(1).sum()), rel_tol=1e-5)  # float32 loss
    seen = []
    loss(lambda x, s, labels=None: seen.append((s, labels)) or x, x0[:7], labels=torch.arange(7), eps=eps[:7])
    assert seen[0][1].tolist() == [0] * 4 + [1] * 3 and seen[0][0].tolist() == [80.0, 10.0, 1.0, 0.1, 80.0, 10.0, 1.0]


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


@pytest.mark.parametrize("target", ["teacher", "self"])
def test_distilled_run_samples_in_one_call(teacher, tmp_path, target):
    truth = gmm8().sample(2000, torch.Generator().manual_seed(5)).float()
    before = one_call_distance(teacher, truth)
    fast = dk.distill(teacher.path, tmp_path / "ct", ct_target=target, steps=300, lr=1e-3, progress=False)
    after = one_call_distance(fast, truth)
    assert after < 0.2 * before, (before, after)
    assert fast.config["train"]["ct_target"] == target
    # a run like any other: its own sampling defaults, said; what needs a denoiser says so
    assert fast.objective == "consistency" and "consistency" in fast.sampling() and "2 steps" in fast.sampling()
    assert len(fast.sample(8)) == 8
    assert fast.sampling(sampler="auto") == fast.sampling()  # auto is the run's own default
    assert fast._sample_config({"sampler": "heun"}).sigma_min is None  # its grid goes with its sampler only
    assert fast._sample_config({"steps": 1}).sigma_min == 0.821
    assert "distilled" in fast.describe()
    with pytest.raises(dk.DiffusekitError, match="consistency model"):
        fast.nll("toy:gmm8:10")
    with pytest.raises(dk.DiffusekitError, match="consistency model.*tune_steps"):
        fast.tune_steps([2])  # its grid would be fitted to an ODE its D does not follow
    with pytest.raises(dk.DiffusekitError, match="already a consistency model"):
        dk.distill(fast.path, tmp_path / "again", steps=1, progress=False)


def test_distilled_run_resumes_with_its_teacher(teacher, tmp_path):
    # the teacher's path is drawn from the step's own noise: stopped and resumed is the uninterrupted run, bit for bit
    whole = dk.distill(teacher.path, tmp_path / "whole", steps=6, progress=False)
    dk.distill(teacher.path, tmp_path / "part", steps=3, progress=False)
    part = dk.train(None, out=tmp_path / "part", resume=True, steps=6, progress=False)
    for a, b in zip(whole.denoiser.parameters(), part.denoiser.parameters()):
        assert torch.equal(a, b)
    gone = shutil.copytree(teacher.path, tmp_path / "gone")
    dk.distill(gone, tmp_path / "orphan", steps=1, progress=False)
    shutil.rmtree(gone)
    with pytest.raises(dk.DiffusekitError, match="learns from its teacher .* which resuming needs"):
        dk.train(None, out=tmp_path / "orphan", resume=True, steps=2, progress=False)
    with pytest.raises(dk.DiffusekitError, match="ct_target"):
        dk.distill(teacher.path, tmp_path / "bad", ct_target="other", steps=1, progress=False)
    with pytest.raises(dk.DiffusekitError, match="init_from"):
        dk.train("toy:gmm8:100", out=tmp_path / "bad", objective="consistency", ct_target="teacher", steps=1,
                 progress=False)


def test_distill_cli(teacher, tmp_path, capsys):
    out = tmp_path / "ct"
    assert cli("distill", teacher.path, "--out", out, "--steps", 5, "--no-progress") == 0
    assert cli("sample", out, "--n", 16, "--out", tmp_path / "s.csv", "--no-progress") == 0
    assert "sampler consistency, 2 steps" in capsys.readouterr().out
    one_line_error(capsys, cli("distill", teacher.path, "--out", tmp_path / "x", "--no-progress"), "budget")
    one_line_error(capsys, cli("distill", teacher.path, "--out", out, "--steps", 5, "--no-progress"), "already holds")
    one_line_error(capsys, cli("nll", out, "--data", "toy:gmm8:10", "--no-progress"), "consistency model")
    one_line_error(capsys, cli("tune-steps", out, "--steps", 2, "--no-progress"), "consistency model")
