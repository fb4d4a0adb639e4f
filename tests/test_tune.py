"""Grids fitted to a model (tune.py, `diffusekit tune-steps`): the dynamic programme finds the best path (checked by
enumerating every path with errors computed directly, not through the Gram matrices), the fitted grids beat the
default grid on an analytic mixture's exact denoiser, and a run stores them and `sample` uses them by default (a
vector run: its default steps' grid, fitted when training ends)."""
import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import diffusekit as dk
from diffusekit.analytic import GaussianMixture
from diffusekit.runtime import sample_seeds
from diffusekit.samplers import VECTOR_ETA, VECTOR_TUNING, PerSampleNoise, sample_dpmpp_2m, sampling_defaults
from diffusekit.schedules import karras_sigmas
from diffusekit.tune import best_paths, contraction_weights, fit_grids, step_errors, teacher
from test_cli import cli, one_line_error


@pytest.fixture(scope="module")
def mixture():
    torch.manual_seed(0)
    gm = GaussianMixture(torch.randn(5, 2) * 2, torch.tensor([0.05, 0.1, 0.2, 0.3, 0.1]))
    return lambda x, sigma: gm.denoiser(x, sigma)


def direct_error(V, grid, path, order, weights=None):
    """Summed mean L2 error of a path's steps, each taken from the teacher's state, computed on the states (each
    weighted by weights[j] of the level it lands on, 1 for the last step to sigma 0)."""
    K = len(grid)
    X, D, final = V[:, :K], V[:, K:2 * K], V[:, 2 * K]
    total = 0.0
    for m, i in enumerate(path):
        if m == len(path) - 1:
            e = D[:, i] - final
        else:
            j = path[m + 1]
            a = float(grid[j] / grid[i])
            x_hat = a * X[:, i] + (1 - a) * D[:, i]
            if order == 2 and m > 0:
                k = path[m - 1]
                r = float(torch.log(grid[i] / grid[j]) / torch.log(grid[k] / grid[i]))
                x_hat = x_hat + (1 - a) * 0.5 * r * (D[:, i] - D[:, k])
            e = (x_hat - X[:, j]) * (1.0 if weights is None else float(weights[j]))
        total += float(e.norm(dim=1).mean())
    return total


@pytest.mark.parametrize("order,contraction", [(1, 0.0), (2, 0.0), (1, 1.0), (2, 0.5)])
def test_dynamic_programme_finds_the_best_path(mixture, order, contraction):
    grid = karras_sigmas(9, 0.002, 80.0)[:-1]
    V = teacher(mixture, (64, 2), grid, 2, sample_seeds(0, 64, stream=3))
    w = contraction_weights(grid, 1.0, contraction)  # as fit_grids weighs them: by the level a step lands on
    first, last, second = step_errors(V @ V.transpose(1, 2), grid, order, w)
    for n, (path, err) in best_paths(first, last, second, [1, 2, 3, 4, 6]).items():
        brute = min((direct_error(V, grid, [0, *rest], order, w), [0, *rest])
                    for rest in itertools.combinations(range(1, len(grid)), n - 1))
        assert path == brute[1] and err == pytest.approx(brute[0], rel=1e-6), n


@pytest.mark.parametrize("sigma_data,sigma", [(1.0, 0.3), (0.5, 2.0), (2.0, 10.0)])
def test_contraction_is_how_the_gaussian_flow_shrinks_an_error(sigma_data, sigma):
    """At contraction 1 a step's weight is the factor by which the probability flow of Gaussian data (its exact
    denoiser) carries an error made at that level to the sample: two states an error apart, solved finely to 0."""
    gauss = GaussianMixture(torch.zeros(1, 2), torch.tensor([sigma_data]))
    x = torch.tensor([[0.7, -1.3]], dtype=torch.float64) * sigma
    e = torch.tensor([[1e-3, 2e-3]], dtype=torch.float64)
    fine = torch.cat([karras_sigmas(400, 1e-4, sigma)[:-1], torch.zeros(1)]).double()
    shrunk = (sample_dpmpp_2m(gauss.denoiser, x + e, fine) - sample_dpmpp_2m(gauss.denoiser, x, fine)).norm() / e.norm()
    assert float(shrunk) == pytest.approx(float(contraction_weights([sigma], sigma_data, 1.0)), rel=1e-4)
    assert float(contraction_weights([sigma], sigma_data, 0.0)) == 1.0
    assert float(contraction_weights([sigma], sigma_data, 0.5)) == pytest.approx(float(shrunk) ** 0.5, rel=1e-4)


def test_fitted_grids_beat_the_default_grid(mixture):
    cfg = SimpleNamespace(sigma_min=0.002, sigma_max=80.0, sigma_data=1.0, in_shape=[2], num_classes=0,
                          pick_labels=lambda n, s: None)
    grids = fit_grids(mixture, cfg, [4, 6, 10], n=128, candidates=40)
    x = PerSampleNoise(sample_seeds(5, 1000)).randn((1000, 2)) * 80.0  # seeds the fit never saw
    reference = sample_dpmpp_2m(mixture, x, karras_sigmas(400, 0.002, 80.0))
    for n, (sigmas, _) in grids.items():
        assert len(sigmas) == n + 1 and sigmas[0] == pytest.approx(80.0) and sigmas[-1] == 0
        fitted = (sample_dpmpp_2m(mixture, x, torch.tensor(sigmas)) - reference).norm(dim=1).mean()
        default = (sample_dpmpp_2m(mixture, x, karras_sigmas(n, 0.002, 80.0)) - reference).norm(dim=1).mean()
        assert fitted < 0.8 * default, (n, float(fitted), float(default))


def test_a_vector_run_samples_by_default_on_its_own_fitted_grid(tmp_path, capsys):
    """Tables and 2-D points sample by default with a little of the SDE's noise (VECTOR_ETA) on the grid fitted when
    training ends, refitted when it resumes (a grid belongs to its weights); images keep sampler auto on karras."""
    out = tmp_path / "run"
    assert cli("train", "--data", "toy:gmm8", "--out", out, "--preset", "tiny", "--steps", 20, "--no-progress") == 0
    stored = json.loads((out / "grids.json").read_text())
    assert stored["step"] == 20 and list(stored["grids"]) == ["20"]
    assert {k: stored["fitted"]["20"][k] for k in ("order", "n", "contraction")} == {
        k: VECTOR_TUNING[k] for k in ("order", "n", "contraction")}
    run = dk.load(out)
    assert run.sampling() == f"sampler dpmpp-2m-sde, eta {VECTOR_ETA:g}, 20 steps, the run's tuned grid"
    by_default = run.sample(50, seed=3).to_numpy()
    assert np.array_equal(by_default, run.sample(50, seed=3, sampler="dpmpp-2m-sde", eta=VECTOR_ETA,
                                                  grid="tuned").to_numpy())
    assert not np.allclose(by_default, run.sample(50, seed=3, eta=1.0).to_numpy())
    # the knob belongs to its sampler, and to the steps where auto is that sampler
    assert run.sampling(sampler="heun") == "sampler heun, 20 steps, the run's tuned grid"
    assert run.sampling(steps=5) == "sampler dpmpp-2m, 5 steps, karras grid"
    assert cli("sample", out, "--n", 10, "--out", tmp_path / "s.csv", "--no-progress") == 0
    assert run.sampling() in capsys.readouterr().out
    dk.train(None, out, resume=True, steps=30, progress=False)
    assert json.loads((out / "grids.json").read_text())["step"] == 30
    assert "tuned grid" in dk.load(out).sampling()
    assert sampling_defaults("diffusion", "image") == {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "run"
    assert cli("train", "--data", "toy:moons", "--out", out, "--preset", "tiny", "--steps", 30, "--no-progress") == 0
    return out


def test_a_run_stores_its_grids_and_sample_uses_them(trained, capsys):
    capsys.readouterr()
    assert cli("tune-steps", trained, "--steps", 3, 5, "--n", 32, "--candidates", 16, "--no-progress") == 0
    out = capsys.readouterr().out
    assert "3 steps:" in out and "5 steps:" in out and "grids.json" in out
    stored = json.loads((trained / "grids.json").read_text())  # beside the 20-step grid training fitted
    assert sorted(stored["grids"], key=int) == ["3", "5", "20"] and stored["step"] == 30
    assert stored["fitted"]["5"] == {"order": 1, "n": 32, "seed": 0, "contraction": 0.0}
    assert stored["fitted"]["20"]["order"] == 2
    run = dk.load(trained)
    assert sorted(run.grids) == [3, 5, 20]
    by_default, tuned, karras = (run.sample(20, steps=5, grid=g, sampler="dpmpp-2m") for g in ("auto", "tuned", "karras"))
    assert np.array_equal(by_default.to_numpy(), tuned.to_numpy())
    assert not np.allclose(by_default.to_numpy(), karras.to_numpy())
    assert "tuned grid" in run.sampling(steps=5) and "karras grid" in run.sampling(steps=4)
    assert "karras grid" in run.sampling(steps=5, rho=3.0)  # a reshaped grid is not the tuned one
    assert cli("sample", trained, "--steps", 5, "--out", trained.parent / "s.csv", "--no-progress") == 0
    assert "tuned grid" in capsys.readouterr().out
    # a second fit adds its step counts, or replaces them with how it fitted them; other weights (raw, not EMA) do
    # not see these grids
    assert cli("tune-steps", trained, "--steps", 2, 5, "--n", 16, "--candidates", 16, "--no-progress") == 0
    assert sorted(dk.load(trained).grids) == [2, 3, 5, 20] and dk.load(trained, ema=False).grids == {}
    fitted = json.loads((trained / "grids.json").read_text())["fitted"]
    assert fitted["5"]["n"] == fitted["2"]["n"] == 16 and fitted["3"]["n"] == 32


def test_grid_errors_are_one_line(trained, tmp_path, capsys):
    run = dk.load(trained)
    with pytest.raises(dk.DiffusekitError, match="no tuned grid for 7 steps.*tune-steps"):
        run.sample(4, steps=7, grid="tuned")
    with pytest.raises(dk.DiffusekitError, match="fixed"):
        run.sample(4, steps=3, grid="tuned", sigma_max=10.0)
    assert cli("tune-steps", trained, "--steps", 0, "--no-progress") != 0
    one_line_error(capsys, 1, "steps")
    assert cli("tune-steps", trained, "--steps", 3, "--contraction", -1, "--no-progress") != 0
    one_line_error(capsys, 1, "contraction must be 0..2")
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "grids.json").write_text('{"checkpoint": "last", "ema": true, "step": 30, "grids": {"3": [1, 2, 0, 0]}}')
    assert cli("sample", copy, "--out", tmp_path / "s.csv", "--no-progress") != 0
    one_line_error(capsys, 1, "grids.json is damaged")
    with pytest.raises(dk.DiffusekitError, match="ensemble"):  # it has no folder of its own to store them in
        dk.Run.ensemble([trained, trained]).tune_steps([3], n=8, candidates=8)
    stored = json.loads((trained / "grids.json").read_text())
    (copy / "grids.json").write_text(json.dumps({**stored, "fitted": [1, 2]}))
    assert cli("tune-steps", copy, "--steps", 4, "--n", 8, "--candidates", 8, "--no-progress") != 0
    one_line_error(capsys, 1, "grids.json is damaged")
    (copy / "grids.json").write_text("[1, 2")
    assert cli("sample", copy, "--out", tmp_path / "s.csv", "--no-progress") != 0
    one_line_error(capsys, 1, "grids.json is damaged")
