"""Layer 1 (contract suite over every sampler x parameterization) and layer 2 (analytic ground truth)."""
import math

import pytest
import torch

from diffusekit.analytic import GaussianMixture
from diffusekit.runtime import sample_seeds
from diffusekit.metrics import energy_distance
from diffusekit.model import ModelConfig, build_denoiser
from diffusekit.samplers import KNOBS, SAMPLERS, generate
from diffusekit.schedules import karras_sigmas

STOCHASTIC = {"ddpm": {}, "ddim": {"eta": 0.5}, "euler": {"churn": 10.0}, "heun": {"churn": 10.0},
              "dpmpp-2m-sde": {"eta": 1.0}, "dpmpp-3m-sde": {"eta": 1.0}, "sa-solver": {"eta": 1.0}}


def knobs_for(name):
    return STOCHASTIC.get(name, {})


@pytest.fixture(scope="module", params=["eps", "x0", "v", "edm"])
def denoiser(request):
    torch.manual_seed(0)
    cfg = ModelConfig(kind="vector", in_shape=[3], preset="tiny", parameterization=request.param, sigma_data=1.0)
    d = build_denoiser(cfg).eval()
    with torch.no_grad():  # the output layer is zero-initialised; give it weights so F is not constant
        d.net.out[-1].weight.normal_(0, 0.3)
    return d


SIGMAS = karras_sigmas(8, 0.002, 80.0)


def run(denoiser, name, seeds, temperature=1.0, **knobs):
    with torch.no_grad():
        return generate(denoiser, name, (len(seeds), 3), SIGMAS, seeds=seeds, temperature=temperature, **knobs)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract(denoiser, name):
    knobs = knobs_for(name)
    seeds = sample_seeds(7, 6)
    x = run(denoiser, name, seeds, **knobs)
    assert x.shape == (6, 3) and torch.isfinite(x).all()
    # same seeds -> same samples; other seeds -> other samples
    assert torch.equal(x, run(denoiser, name, seeds, **knobs))
    assert not torch.allclose(x, run(denoiser, name, sample_seeds(8, 6), **knobs))
    # batch-size invariance: samples 0..5 drawn as two batches of 3 (seeds of sample i do not depend on the batch)
    parts = torch.cat([run(denoiser, name, seeds[:3], **knobs), run(denoiser, name, seeds[3:], **knobs)])
    # (up to float32 rounding of differently sized GEMMs, which multistep differences amplify: relative to the
    # largest value in play -- the random eps network drives samples to ~300)
    torch.testing.assert_close(parts, x, atol=1e-5 * float(x.abs().max()), rtol=1e-5)
    # temperature 0: fully deterministic and identical for every seed
    z = run(denoiser, name, seeds, temperature=0.0, **knobs)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z, z[:1].expand_as(z), rtol=1e-4, atol=1e-5)  # rows of one GEMM may round differently


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_temperature_scales_every_draw(name):
    # For Gaussian data N(0, s^2) the exact denoiser is linear, so each sampler's output is a linear function of
    # all its Gaussian draws: temperature t must give exactly t times the temperature-1 sample (same seeds). A
    # sampler that forgot to scale one draw (start or injected noise) fails this.
    s = 0.7
    D = lambda x, sigma: x * (s**2 / (s**2 + sigma.reshape(-1, 1) ** 2))  # noqa: E731
    seeds = sample_seeds(3, 5)
    one = generate(D, name, (5, 2), SIGMAS, seeds=seeds, temperature=1.0, **knobs_for(name))
    half = generate(D, name, (5, 2), SIGMAS, seeds=seeds, temperature=0.5, **knobs_for(name))
    torch.testing.assert_close(half, 0.5 * one, atol=1e-6, rtol=1e-5)


def test_knobs_table_matches_signatures():
    import inspect

    for name, fn in SAMPLERS.items():
        params = inspect.signature(fn).parameters
        assert set(KNOBS[name]) <= set(params), name


# ---------------------------------------------------------------------------------------------------------
# Layer 2: with the exact denoiser of a Gaussian mixture every sampler must reproduce the mixture.

GMM = GaussianMixture([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], [0.3, 0.5, 0.25], [0.5, 0.3, 0.2])
N = 3000


def gmm_samples(name, steps, **knobs):
    D = lambda x, sigma: GMM.denoiser(x, sigma)  # noqa: E731
    return generate(D, name, (N, 2), karras_sigmas(steps, 0.002, 80.0), seeds=sample_seeds(0, N), **knobs).double()


@pytest.fixture(scope="module")
def reference():
    g = torch.Generator().manual_seed(1)
    return GMM.sample(N, g), GMM.sample(N, g)


def check_mixture(x, reference, label):
    # Component weights: each sample's most likely component. With N = 3000 the binomial standard error of a
    # weight is <= 0.009; the hard assignment itself mislabels < 0.5% here (components are > 5 std apart);
    # 0.035 is ~4 standard errors.
    assign = GMM.responsibilities(x).argmax(1)
    weights = torch.bincount(assign, minlength=3).double() / len(x)
    assert torch.allclose(weights, GMM.weights, atol=0.035), (label, weights)
    # Distribution distance: for two independent N-sample sets of the same law the energy-distance
    # V-statistic has mean 2 E|X - X'| / N (about 2e-3 here) and a spread of the same order. A sampler that is
    # right up to discretization error stays below 3x that null mean; the negative control (3 Euler steps)
    # lands > 10x above it, and 10-NFE runs of any sampler land 5x-50x above it.
    null_mean = 2 * float(torch.cdist(reference[0], reference[1]).mean()) / len(x)
    ed = energy_distance(x, reference[0])
    assert ed < 3 * null_mean, (label, ed, null_mean)
    return ed


# the consistency sampler solves nothing with a posterior mean: test_distill.py gives it the exact consistency function
@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "consistency"])
def test_reproduces_mixture_at_50_steps(name, reference):
    check_mixture(gmm_samples(name, 50, **knobs_for(name)), reference, name)


@pytest.mark.parametrize("name", ["heun", "dpmpp-2m", "sa-solver"])
def test_reproduces_mixture_at_20_steps(name, reference):
    check_mixture(gmm_samples(name, 20), reference, name)


def test_negative_control_detects_a_bad_sampler(reference):
    # 3 Euler steps badly under-resolve the ODE: the check above must reject it (it is able to fail).
    with pytest.raises(AssertionError):
        check_mixture(gmm_samples("euler", 3), reference, "euler-3")


def test_component_spread(reference):
    # within-component standard deviations are reproduced too (not only the means)
    x = gmm_samples("dpmpp-2m", 20)
    assign = GMM.responsibilities(x).argmax(1)
    for k in range(3):
        std = x[assign == k].std(0)
        assert torch.allclose(std, GMM.stds[k], rtol=0.1), (k, std)


def test_ddim_eta0_is_euler():
    D = lambda x, sigma: GMM.denoiser(x, sigma)  # noqa: E731
    seeds = sample_seeds(0, 50)
    a = generate(D, "ddim", (50, 2), SIGMAS, seeds=seeds)
    b = generate(D, "euler", (50, 2), SIGMAS, seeds=seeds)
    torch.testing.assert_close(a, b)


def test_callback_sees_every_step():
    seen = []
    D = lambda x, sigma: GMM.denoiser(x, sigma)  # noqa: E731
    generate(D, "heun", (4, 2), SIGMAS, seeds=sample_seeds(0, 4), callback=seen.append)
    assert [s["i"] for s in seen] == list(range(len(SIGMAS) - 1))
    assert all(math.isfinite(s["sigma"]) for s in seen)


def test_classifier_free_guidance_formula():
    from diffusekit.precond import guided

    # D_c(x) = x + label, D_u(x) = x - 1 (null label 9): guided = D_u + w (D_c - D_u)
    def D(x, sigma, labels):
        return x + torch.where(labels == 9, -1.0, labels.float())[:, None]

    x, labels = torch.zeros(3, 2), torch.tensor([0, 2, 5])
    for w in (0.0, 1.0, 3.0):
        out = guided(D, labels, w, null_label=9)(x, torch.tensor(1.0))
        expected = -1 + w * (labels.float() + 1)
        torch.testing.assert_close(out, expected[:, None].expand(3, 2))


def test_bad_sigma_grid_is_a_clear_error():
    from diffusekit.errors import DiffusekitError

    D = lambda x, sigma: x  # noqa: E731
    for bad in ([1.0, 2.0, 0.0], [2.0, 1.0], [3.0]):
        with pytest.raises(DiffusekitError):
            generate(D, "ddim", (2, 2), torch.tensor(bad), seeds=[0, 1])


def test_sigma_grid_overrides_stay_in_the_training_range():
    from diffusekit.schedules import sigma_grid
    from diffusekit.errors import DiffusekitError
    from diffusekit.model import ModelConfig

    cfg = ModelConfig(kind="vector", in_shape=[2], preset="tiny")
    s = sigma_grid(cfg, 5, sigma_min=0.05, sigma_max=10.0, rho=3.0)
    assert abs(float(s[0]) - 10.0) < 1e-9 and abs(float(s[-2]) - 0.05) < 1e-12 and float(s[-1]) == 0.0
    for bad in ({"sigma_max": 2 * cfg.sigma_max}, {"sigma_min": cfg.sigma_min / 2}, {"sigma_min": 1.0, "sigma_max": 0.5},
                {"rho": -1.0}, {"rho": 5.0, "grid": "loguniform"}, {"sigma_max": 10.0, "grid": "vp"}):
        with pytest.raises(DiffusekitError):
            sigma_grid(cfg, 5, **bad)
    # the range as an error message prints it (rounded) is accepted back
    vp = ModelConfig(kind="vector", in_shape=[2], preset="tiny", time_conditioning="vp")
    vp.use_vp_range()
    s = sigma_grid(vp, 4, sigma_min=float(f"{vp.sigma_min:.6g}"), sigma_max=float(f"{vp.sigma_max:.6g}"))
    assert float(s[0]) <= vp.sigma_max and float(s[-2]) >= vp.sigma_min * (1 - 1e-9)


def test_sampler_knob_values_are_checked():
    from diffusekit.errors import DiffusekitError
    from diffusekit.samplers import check_knobs

    check_knobs("dpmpp-2m-sde", {"eta": 0.5, "s_tmin": 0.1, "s_tmax": math.inf})
    for name, bad in (("sa-solver", {"eta": -1.0}), ("dpmpp-2m-sde", {"s_tmin": math.nan}),
                      ("euler", {"s_tmin": 2.0, "s_tmax": 1.0}), ("ddim", {"churn": 1.0})):
        with pytest.raises(DiffusekitError):
            check_knobs(name, bad)


@pytest.mark.parametrize("name", ["dpmpp-2m-sde", "dpmpp-3m-sde", "sa-solver"])
def test_sde_noise_window(name):
    # a window holding every step is the plain SDE; one holding none is the ODE solver (eta 0); a window in between
    # differs from both
    from diffusekit.schedules import karras_sigmas

    D = lambda x, sigma: 0.8 * x / (1 + sigma**2) ** 0.5  # noqa: E731
    sigmas = karras_sigmas(8, 0.01, 20.0)
    run = lambda **k: generate(D, name, (4, 3), sigmas, seeds=range(4), **k)  # noqa: E731
    torch.testing.assert_close(run(s_tmin=0.0, s_tmax=100.0), run())
    torch.testing.assert_close(run(s_tmin=50.0), run(eta=0.0))
    mid = run(s_tmin=0.1, s_tmax=5.0)
    assert not torch.allclose(mid, run()) and not torch.allclose(mid, run(eta=0.0))


def test_sa_solver_first_order_is_ancestral_sampling():
    # predictor order 1 without corrector at eta = 1: x' = (s'/s)^2 x + (1 - (s'/s)^2) D + s' sqrt(1 - (s'/s)^2) z,
    # exactly DDPM's ancestral step, with the same draws (one per step but the last)
    from diffusekit.errors import DiffusekitError

    D = lambda x, sigma: GMM.denoiser(x, sigma)  # noqa: E731
    seeds = sample_seeds(0, 20)
    a = generate(D, "sa-solver", (20, 2), SIGMAS, seeds=seeds, predictor_order=1, corrector_order=0)
    torch.testing.assert_close(a, generate(D, "ddpm", (20, 2), SIGMAS, seeds=seeds))
    b = generate(D, "sa-solver", (20, 2), SIGMAS, seeds=seeds, predictor_order=2, corrector_order=0)
    c = generate(D, "sa-solver", (20, 2), SIGMAS, seeds=seeds, predictor_order=1, corrector_order=2)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)  # higher orders and the corrector do act
    with pytest.raises(DiffusekitError):
        generate(D, "sa-solver", (2, 2), SIGMAS, seeds=[0, 1], predictor_order=5)


def test_auto_sampler_follows_the_steps():
    from diffusekit.samplers import DEFAULT_SAMPLER, SDE_MIN_STEPS, SampleConfig

    assert SampleConfig.from_options(steps=SDE_MIN_STEPS).sampler == DEFAULT_SAMPLER
    assert SampleConfig.from_options(steps=SDE_MIN_STEPS - 1).sampler == "dpmpp-2m"
    assert SampleConfig.from_options(sampler="heun", steps=2).sampler == "heun"  # a named sampler is kept
