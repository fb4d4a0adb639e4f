import math

import pytest
import torch

from diffusekit import schedules as S
from diffusekit.errors import DiffusekitError
from diffusekit.losses import WEIGHTINGS, DiffusionLoss
from diffusekit.precond import PARAMETERIZATIONS, Denoiser


def test_conversions_roundtrip():
    sigma = torch.logspace(-3, 2, 50, dtype=torch.float64)
    torch.testing.assert_close(S.alpha_bar_to_sigma(S.sigma_to_alpha_bar(sigma)), sigma)
    torch.testing.assert_close(S.logsnr_to_sigma(S.sigma_to_logsnr(sigma)), sigma)


def test_vp_tables_match_diffusers():
    from diffusers import DDPMScheduler

    lin = DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    cos = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    torch.testing.assert_close(S.vp_linear_alpha_bars(), lin, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(S.vp_cosine_alpha_bars(), cos, atol=1e-6, rtol=1e-5)


def test_karras_grid():
    s = S.karras_sigmas(10, 0.002, 80.0)
    assert len(s) == 11 and s[-1] == 0
    assert math.isclose(s[0], 80.0) and math.isclose(s[-2], 0.002)
    assert (s[:-1] > s[1:]).all()


@pytest.mark.parametrize("grid", S.GRIDS)
def test_every_grid_descends_to_zero(grid):
    s = S.sampling_sigmas(grid, 7, 0.01, 50.0, alpha_bars=S.vp_linear_alpha_bars())
    assert len(s) == 8 and s[-1] == 0 and (s[:-1] > s[1:]).all()


def test_bad_grid_and_steps():
    with pytest.raises(DiffusekitError):
        S.sampling_sigmas("nope", 5, 0.01, 1.0)
    with pytest.raises(DiffusekitError):
        S.sampling_sigmas("karras", 0, 0.01, 1.0)


def test_sigma_to_timestep_inverts_the_table():
    ab = S.vp_cosine_alpha_bars()
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    torch.testing.assert_close(S.sigma_to_timestep(S.alpha_bar_to_sigma(ab[t]), ab), t.double())
    mid = S.sigma_to_timestep(S.alpha_bar_to_sigma(ab[10:12]).sqrt().prod().reshape(1), ab)  # geometric mean
    assert 10 < float(mid) < 11


def test_vp_timesteps_match_diffusers():
    from diffusers import DDIMScheduler

    for spacing in ("leading", "trailing", "linspace"):
        sch = DDIMScheduler(timestep_spacing=spacing)
        sch.set_timesteps(17)
        assert S.vp_timesteps(1000, 17, spacing).tolist() == sch.timesteps.tolist(), spacing


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_parameterization_targets(param):
    # Each parameterization's D must be consistent with the quantity its network predicts.
    torch.manual_seed(0)
    x0, eps = torch.randn(5, 4), torch.randn(5, 4)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0])
    s = sigma[:, None]
    x = x0 + s * eps
    alpha, sv = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    target = {"eps": eps, "x0": x0, "v": alpha * eps - sv * x0}
    if param == "edm":
        c_skip, c_out, _ = PARAMETERIZATIONS["edm"](s, 0.5)
        target["edm"] = (x0 - c_skip * x) / c_out
    D = Denoiser(lambda xin, c, y: target[param], param, sigma_data=0.5)
    torch.testing.assert_close(D(x, sigma), x0, atol=1e-4, rtol=1e-4)


def test_network_sees_unit_variance_input():
    seen = {}

    def F(xin, c, y):
        seen["std"] = xin.std()
        return torch.zeros_like(xin)

    x0 = torch.randn(20000, 1) * 0.5
    for param in PARAMETERIZATIONS:
        D = Denoiser(F, param, sigma_data=0.5)
        D(x0 + 10.0 * torch.randn_like(x0), torch.tensor(10.0))
        assert 0.9 < seen["std"] < 1.1, param


def test_weightings_are_the_named_losses():
    # eps-MSE and v-MSE written on the x0 error equal the MSE of the predicted quantity
    torch.manual_seed(1)
    x0, eps = torch.randn(6, 3), torch.randn(6, 3)
    sigma = torch.tensor([0.05, 0.2, 0.7, 1.0, 3.0, 20.0])
    eps_hat = torch.randn(6, 3)
    D_eps = Denoiser(lambda xin, c, y: eps_hat, "eps")
    loss = DiffusionLoss(lambda n, g=None: sigma, "eps")(D_eps, x0, sigma=sigma, eps=eps)
    torch.testing.assert_close(loss, ((eps_hat - eps) ** 2).mean(1), atol=1e-4, rtol=1e-4)
    s = sigma[:, None]
    v = eps / (1 + s**2).sqrt() - s / (1 + s**2).sqrt() * x0
    v_hat = torch.randn(6, 3)
    D_v = Denoiser(lambda xin, c, y: v_hat, "v")
    loss = DiffusionLoss(lambda n, g=None: sigma, "v")(D_v, x0, sigma=sigma, eps=eps)
    torch.testing.assert_close(loss, ((v_hat - v) ** 2).mean(1), atol=1e-4, rtol=1e-4)
    w = WEIGHTINGS["min-snr"](sigma, 0.5, 5.0)
    assert torch.allclose(w, torch.clamp(1 / sigma**2, max=5.0))


def test_training_noise_distributions():
    g = torch.Generator().manual_seed(0)
    s = S.LogNormalSigma(-1.2, 1.2)(100_000, g)
    assert abs(float(s.log().mean()) + 1.2) < 0.02 and abs(float(s.log().std()) - 1.2) < 0.02
    ab = S.vp_linear_alpha_bars()
    s = S.VPTimestepSigma(ab)(100_000, g)
    table = S.alpha_bar_to_sigma(ab).float()
    assert torch.isin(s, table).all()
    assert float((s > table[499]).float().mean()) == pytest.approx(0.5, abs=0.01)
