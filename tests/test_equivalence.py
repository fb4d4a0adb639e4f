"""Layer 3: equivalence with diffusers' own schedulers (docs/design.md, "Tests in three layers").

The same eps-prediction network, the same integer timesteps and the same Gaussian draws go through
diffusers' stateful loop (``for t in timesteps: x = scheduler.step(unet(x, t).sample, t, x).prev_sample``, in
VP space) and through our plain sampler functions (in sigma space, on ``timestep_sigmas(alphas_cumprod,
timesteps)``, with the network wrapped by ``precond.from_diffusers``). The two spaces are related by
``x_vp = sqrt(alpha_bar) * x_sigma`` and coincide at sigma = 0, so the final samples must agree to float
precision, and so must every intermediate state once mapped to VP space.
"""
from types import SimpleNamespace

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel  # noqa: E402
from diffusers.schedulers import scheduling_ddim, scheduling_ddpm, scheduling_dpmsolver_multistep  # noqa: E402

from diffusekit import precond, samplers, schedules  # noqa: E402

# Tolerance, absolute, on data of unit scale (the EpsNet below makes samples O(1); asserted in _compare).
# Both sides run in float32 (eps_32 = 1.2e-7) and differ only in rounding: diffusers rounds its sigma table
# to float32 and works on x_vp, we keep float64 sigmas and work on x_sigma, which reaches |x| ~ 500 at
# sigma_max = 157 (one ulp there = 3e-5; sigma-space errors are divided by sqrt(1 + sigma^2) on the way to
# VP space). Measured max differences are 0.7e-6 .. 5e-6; 1e-4 leaves 20x margin for BLAS/thread
# differences, while any wrong coefficient, a timestep off by one or an extra/missing noise draw moves
# the samples by 1e-2 .. 1.
ATOL = 1e-4
SHAPE = (2, 1, 8, 8)


class EpsNet(torch.nn.Module):
    """A fixed eps-prediction network with O(1) samples: the exact E[eps | x_t] for N(0, I) data plus a random U-Net.

    eps(x_t, t) = sqrt(1 - ab_t) * (x_t + c * sqrt(ab_t) * u(x_t, t)), u a randomly initialised diffusers
    UNet2DModel. Its denoiser is x0_hat = sqrt(ab_t) x_t - c (1 - ab_t) u(x_t, t): the exact posterior mean
    plus a bounded random term. (A bare random U-Net gives x0_hat ~ x_t / sqrt(ab_t), samples of scale
    sigma_max ~ 160 and so float errors of ~1e-4 that would hide small algorithmic differences.)
    ab_t is interpolated linearly in t so that our fractional timesteps are handled honestly.
    Called like a UNet2DModel: ``net(x, t, class_labels=None).sample``.
    """

    def __init__(self, unet, alphas_cumprod, c=1.0):
        super().__init__()
        self.unet, self.c = unet, c
        self.register_buffer("ab", alphas_cumprod.double())

    def forward(self, x, t, class_labels=None):
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        i = tt.floor().long().clamp(0, len(self.ab) - 2)
        w = tt - i
        ab = ((1 - w) * self.ab[i] + w * self.ab[i + 1]).to(x.dtype).reshape(-1, 1, 1, 1)
        u = self.unet(x, t).sample
        return SimpleNamespace(sample=(1 - ab).sqrt() * (x + self.c * ab.sqrt() * u))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A net this small is fastest on one thread; with two intra-op threads on a 2-core machine that is busy
    # with anything else, each call is ~200x slower (measured 4 ms -> 0.9 s) and this file takes minutes.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8).eval()


def make_scheduler(kind, beta_schedule="linear", **overrides):
    common = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=beta_schedule,
                  prediction_type="epsilon")
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, **overrides)
    if kind in ("dpmpp-2m", "dpmpp-2m-sde"):
        algorithm_type = "sde-dpmsolver++" if kind == "dpmpp-2m-sde" else "dpmsolver++"
        return DPMSolverMultistepScheduler(**common, algorithm_type=algorithm_type, solver_order=2,
                                           solver_type="midpoint", final_sigmas_type="zero", lower_order_final=True,
                                           **overrides)
    if kind == "dpmpp-3m":  # third order to the end (the last step, to sigma 0, is first order on both sides); the
        # second step is second order in the exponential-integrator form, diffusers' solver_type "heun"
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=3, solver_type="heun",
                                           final_sigmas_type="zero", lower_order_final=False, **overrides)
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small", **overrides)
    raise ValueError(kind)


class NoiseRecorder:
    """Stands in for diffusers' ``randn_tensor`` inside a scheduler module and keeps every draw it makes."""

    def __init__(self, randn_tensor):
        self.randn_tensor, self.draws = randn_tensor, []

    def __call__(self, *args, **kwargs):
        z = self.randn_tensor(*args, **kwargs)
        self.draws.append(z.clone())
        return z


class Replay:
    """A `generator` for our samplers (see samplers.randn_like) that hands back recorded draws, in order."""

    def __init__(self, draws):
        self.draws = list(draws)

    def randn(self, shape, dtype=torch.float32, device="cpu"):
        assert self.draws, "our sampler drew more noise than diffusers did"
        z = self.draws.pop(0)
        assert tuple(z.shape) == tuple(shape), (z.shape, shape)
        return z.to(dtype=dtype, device=device)


def run_diffusers(net, scheduler, n, x_T, step_kwargs=None):
    """diffusers' own loop, in VP space. Returns the VP state after every step (the last is the sample)."""
    scheduler.set_timesteps(n)
    x, states = x_T * scheduler.init_noise_sigma, []
    for t in scheduler.timesteps:
        eps = net(x, t).sample
        x = scheduler.step(eps, t, x, **(step_kwargs or {})).prev_sample
        states.append(x)
    return states


def run_ours(net, scheduler, sampler, x_T, **kwargs):
    """Our sampler on the scheduler's timesteps, in sigma space; returns run_diffusers' states, mapped to VP space."""
    D = precond.from_diffusers(net, scheduler)
    sigmas = schedules.timestep_sigmas(scheduler.alphas_cumprod, scheduler.timesteps)
    x = (x_T.double() / scheduler.alphas_cumprod.double()[scheduler.timesteps[0]].sqrt()).float()
    states = []

    def to_vp(info):  # x at sigmas[i] (i >= 1) is the state diffusers reached after its step i - 1
        if info["i"] > 0:
            states.append(info["x"] / (1 + info["sigma"] ** 2) ** 0.5)

    x = sampler(D, x, sigmas, callback=to_vp, **kwargs)
    return states + [x]  # sigma = 0: sigma space and VP space coincide


def _compare(theirs, ours):
    assert len(theirs) == len(ours)
    assert 0.1 < theirs[-1].std() < 10, "samples should be O(1), or ATOL means nothing"
    for i, (a, b) in enumerate(zip(theirs, ours)):
        torch.testing.assert_close(b, a, rtol=0, atol=ATOL, msg=lambda m: f"state after step {i}: {m}")


def _x_T(seed=1):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


SAMPLER_FN = {"ddim": samplers.sample_ddim, "dpmpp-2m": samplers.sample_dpmpp_2m, "ddpm": samplers.sample_ddpm,
              "dpmpp-2m-sde": samplers.sample_dpmpp_2m_sde,
              "dpmpp-3m": lambda *a, **k: samplers.sample_dpmpp_3m_sde(*a, eta=0.0, **k)}
NOISE_MODULE = {"ddim": scheduling_ddim, "ddpm": scheduling_ddpm, "dpmpp-2m-sde": scheduling_dpmsolver_multistep}


def _check(unet, kind, n, beta_schedule, monkeypatch, eta=None, **overrides):
    scheduler = make_scheduler(kind, beta_schedule, **overrides)
    net = EpsNet(unet, scheduler.alphas_cumprod)
    x_T = _x_T()
    step_kwargs, our_kwargs = {}, {}
    if kind == "ddim":
        step_kwargs["eta"] = our_kwargs["eta"] = eta or 0.0
    recorder = None
    if kind in ("ddpm", "dpmpp-2m-sde") or (kind == "ddim" and eta):
        recorder = NoiseRecorder(NOISE_MODULE[kind].randn_tensor)
        monkeypatch.setattr(NOISE_MODULE[kind], "randn_tensor", recorder)
        step_kwargs["generator"] = torch.Generator().manual_seed(2)
    with torch.no_grad():
        theirs = run_diffusers(net, scheduler, n, x_T, step_kwargs)
        if recorder is not None:
            # diffusers adds sqrt(variance) * z to x_vp; we add sigma_up * z to x_sigma. Under x_vp = sqrt(ab) x_sigma
            # these are the same Gaussian iff sqrt(ab_prev) * sigma_up = sqrt(variance) -- which the state-by-state
            # comparison below verifies, given the *same* z. We draw no noise on the last step (sigma_next = 0);
            # DDPMScheduler draws none at t = 0; DDIMScheduler and sde-dpmsolver++ draw one there and multiply it
            # by 0 (std_dev_t = 0, resp. sigma_t = 0).
            draws = recorder.draws if kind == "ddpm" else recorder.draws[:-1]
            assert len(draws) == n - 1
            replay = Replay(draws)
            our_kwargs["generator"] = replay
        ours = run_ours(net, scheduler, SAMPLER_FN[kind], x_T, **our_kwargs)
    if recorder is not None:
        assert not replay.draws, "our sampler drew less noise than diffusers did"
    _compare(theirs, ours)


@pytest.mark.parametrize("n", [10, 25])
@pytest.mark.parametrize("kind", ["ddim", "dpmpp-2m", "ddpm"])
def test_matches_diffusers_linear(unet, kind, n, monkeypatch):
    _check(unet, kind, n, "linear", monkeypatch)


@pytest.mark.parametrize("kind", ["ddim", "dpmpp-2m", "ddpm"])
def test_matches_diffusers_cosine(unet, kind, monkeypatch):
    # squaredcos_cap_v2 (betas clipped at 0.999). DPM-Solver's linspace grid would start at t = 999, where
    # sigma = 2e4: there eps -> x0 is cancellation-limited in float32 on *both* sides (diffusers computes
    # sigma_t = sqrt(1 - ab) = 1.0 in float32; x0 = (x - sigma_t eps) / alpha_t with alpha_t = 5e-5): the two
    # float32 runs then differ by ~1e-3, and each is ~1e-3 from the same sampler run in float64. diffusers' own
    # remedy is lambda_min_clipped (documented as "critical for the cosine schedule"); -5.1 starts at t = 995,
    # sigma = 160, as for the linear table.
    overrides = {"lambda_min_clipped": -5.1} if kind == "dpmpp-2m" else {}
    _check(unet, kind, 10, "squaredcos_cap_v2", monkeypatch, **overrides)


def test_ddim_eta_matches_diffusers(unet, monkeypatch):
    # DDIM's sigma_t(eta) mapped to sigma space: partial stochasticity, same z
    _check(unet, "ddim", 10, "linear", monkeypatch, eta=0.5)


@pytest.mark.parametrize("n", [10, 25])
def test_dpmpp_3m_matches_diffusers(unet, n, monkeypatch):
    # our dpmpp-3m-sde at eta = 0 is diffusers' dpmsolver++ of order 3 (first, second, then third order)
    _check(unet, "dpmpp-3m", n, "linear", monkeypatch)


@pytest.mark.parametrize("n", [10, 25])
def test_dpmpp_2m_sde_matches_diffusers(unet, n, monkeypatch):
    # our dpmpp-2m-sde at eta = 1 is diffusers' sde-dpmsolver++ (midpoint), same z at every step
    _check(unet, "dpmpp-2m-sde", n, "linear", monkeypatch)


@pytest.mark.parametrize("n", [5, 14, 15, 20])
def test_dpmpp_lower_order_final(unet, n, monkeypatch):
    # diffusers switches rules at 15 steps (lower_order_final); with final_sigmas_type="zero" its last step is
    # first order for every n, i.e. x = x0_hat, which is what our step to sigma = 0 does.
    _check(unet, "dpmpp-2m", n, "linear", monkeypatch)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 3, 7, 10, 25, 333, 1000])
def test_vp_timesteps_match_diffusers(spacing, n):
    for cls in (DDIMScheduler, DDPMScheduler):
        scheduler = cls(timestep_spacing=spacing)
        scheduler.set_timesteps(n)
        assert torch.equal(schedules.vp_timesteps(1000, n, spacing), scheduler.timesteps)


def test_vp_tables_match_diffusers():
    for name, beta_schedule in (("linear", "linear"), ("cosine", "squaredcos_cap_v2")):
        theirs = DDPMScheduler(beta_schedule=beta_schedule).alphas_cumprod.double()
        torch.testing.assert_close(schedules.vp_table(name), theirs, rtol=1e-5, atol=1e-9)


SA_WINDOW = (200, 800)  # diffusers' default tau_func: tau = 1 for 200 <= t <= 800, else 0


@pytest.mark.parametrize("tau,orders", [(1.0, (3, 4)), (0.0, (3, 4)), (1.0, (2, 2)), (0.7, (1, 2)), ("window", (3, 4))])
def test_sa_solver_matches_diffusers(unet, tau, orders, monkeypatch):
    # SA-Solver: diffusers' SASolverScheduler (data prediction) against our sa-solver with eta = tau^2 (its default
    # timestep window for tau becomes our s_tmin / s_tmax). diffusers corrects a state at the start of its next
    # step() and keeps the corrected one as `last_sample`; our callback sees the corrected state too. Its grid ends
    # at sigma(t=0) > 0, ours at 0, so the corrected states at sigmas[1..n-2] are compared, and at sigmas[n-1] the
    # predicted one (the step to 0 returns the denoised output; nothing corrects that state on our side).
    from diffusers import SASolverScheduler
    from diffusers.schedulers import scheduling_sasolver

    n, (p, c) = 12, orders
    lo, hi = SA_WINDOW
    tau_fn = (lambda t: 1.0 if lo <= t <= hi else 0.0) if tau == "window" else (lambda t: tau)
    scheduler = SASolverScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                  prediction_type="epsilon", predictor_order=p, corrector_order=c, tau_func=tau_fn,
                                  algorithm_type="data_prediction", lower_order_final=True)
    net = EpsNet(unet, scheduler.alphas_cumprod)
    x_T = _x_T()
    recorder = NoiseRecorder(scheduling_sasolver.randn_tensor)
    monkeypatch.setattr(scheduling_sasolver, "randn_tensor", recorder)
    corrected, predicted = [], []
    with torch.no_grad():
        scheduler.set_timesteps(n)
        x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t).sample, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
            corrected.append(scheduler.last_sample.clone())
            predicted.append(x)
        # diffusers draws on every step (and multiplies by 0 where tau = 0); we draw only where we inject noise,
        # never on the last step
        ts = scheduler.timesteps.tolist()
        used = [z for t, z in zip(ts[:-1], recorder.draws) if tau_fn(t) > 0]
        replay = Replay(used)
        kw = {"eta": 1.0, "s_tmin": _sigma_at(scheduler, lo - 0.5), "s_tmax": _sigma_at(scheduler, hi + 0.5)} \
            if tau == "window" else {"eta": tau**2}
        ours = run_ours(net, scheduler, samplers.sample_sa_solver, x_T, predictor_order=p, corrector_order=c,
                        generator=replay, **kw)
    assert not replay.draws
    assert 0.1 < predicted[-1].std() < 10
    theirs = corrected[1:n - 1] + [predicted[n - 2]]  # states at sigmas[1..n-1]
    for i, (a, b) in enumerate(zip(theirs, ours[:n - 1])):
        torch.testing.assert_close(b, a, rtol=0, atol=ATOL, msg=lambda m: f"state at sigmas[{i + 1}]: {m}")


def _sigma_at(scheduler, t):
    # sigma at a fractional timestep, as our grid computes it (monotone in t): bounds between integer timesteps
    return float(schedules.timestep_sigmas(scheduler.alphas_cumprod, [int(t)])[0] * 0.5
                 + schedules.timestep_sigmas(scheduler.alphas_cumprod, [int(t) + 1])[0] * 0.5)
