"""diffusers folders as runs and runs as diffusers folders (diffusers_io.py): a tiny pipeline saved with
save_pretrained (random weights, no download) samples the same through `diffusekit sample FOLDER`, through the
library's from_diffusers path and through diffusers' own scheduler loop; an exported run loads in diffusers'
DiffusionPipeline.from_pretrained and samples what `diffusekit sample` samples from it, and is the run's denoiser."""
import json

import numpy as np
import pytest
import torch

import diffusekit as dk
from diffusekit import schedules
from diffusekit.runtime import sample_seeds
from test_cli import cli, one_line_error

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel  # noqa

N, STEPS, SEED = 4, 10, 3


def tiny_unet(sample_size=8):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def seeded_noise(shape, seed=SEED):
    """The starting draws of diffusekit's sampler: one generator per sample (runtime.sample_seeds)."""
    return torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(s))
                        for s in sample_seeds(seed, shape[0])])


def to_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("betas", [dict(beta_schedule="scaled_linear"), dict(beta_schedule="squaredcos_cap_v2"),
                                   dict(trained_betas=np.linspace(1e-3, 0.05, 150).tolist())])
def test_a_diffusers_pipeline_samples_as_diffusers_does(tmp_path, betas):
    # v-prediction keeps a random U-Net's samples O(1) (eps-prediction would give samples of scale sigma_max)
    scheduler = DDPMScheduler(num_train_timesteps=150, prediction_type="v_prediction", clip_sample=False, **betas)
    unet = tiny_unet()
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    # 1. the command line on the folder
    assert cli("sample", tmp_path / "pipe", "--sampler", "ddim", "--schedule", "timesteps", "--steps", STEPS,
               "--seed", SEED, "--n", N, "--out", tmp_path / "s.npz", "--no-progress") == 0
    ours_cli = np.load(tmp_path / "s.npz")["arr_0"]
    # 2. the library's own path
    D = dk.from_diffusers(unet, scheduler)
    sigmas = schedules.timestep_sigmas(scheduler.alphas_cumprod, schedules.vp_timesteps(150, STEPS))
    with torch.no_grad():
        x_lib = dk.generate(D, "ddim", (N, 1, 8, 8), sigmas, seeds=sample_seeds(SEED, N))
    np.testing.assert_array_equal(ours_cli, to_uint8(x_lib))
    # 3. diffusers' own loop from the same draws (x_vp = x_sigma / sqrt(1 + sigma^2))
    ddim = DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=True)
    ddim.set_timesteps(STEPS)
    assert torch.equal(ddim.timesteps, schedules.vp_timesteps(150, STEPS))
    x = seeded_noise((N, 1, 8, 8)) * float(sigmas[0]) / float(1 + sigmas[0] ** 2) ** 0.5
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x).prev_sample
    assert 0.2 < x.std() < 5 and (to_uint8(x) % 255 != 0).mean() > 0.5, "samples should be O(1) and not clipped"
    torch.testing.assert_close(x_lib, x, rtol=0, atol=1e-4)


def test_every_command_takes_a_diffusers_folder(tmp_path, capsys):
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction", clip_sample=False)
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "bare")  # a bare UNet2DModel with its scheduler config beside it
    scheduler.save_pretrained(tmp_path / "bare")
    run = dk.load(tmp_path / "bare")
    assert run.model_config.in_shape == [1, 8, 8] and "diffusers" in run.describe()
    images = run.sample(6, steps=4)
    assert run.inpaint(images, "box:4", steps=3).images.shape == (6, 8, 8, 1)
    assert run.upscale(images[:, ::2, ::2], 2, steps=3).images.shape == (6, 8, 8, 1)
    assert np.isfinite(run.nll(images, method="elbo", levels=4).bits_per_dim).all()
    lat = run.encode(images, method="ddim", steps=6)
    assert run.decode(lat, method="ddim", steps=6).shape == images.shape
    det = dk.AnomalyDetector.fit(run.sample(40, steps=2, seed=1), runs=[tmp_path / "bare"], out=tmp_path / "det")
    assert len(det.score(images, fpr=0.5)) == 6
    assert cli("info", tmp_path / "bare") == 0 and "diffusers" in capsys.readouterr().out
    from diffusekit.service import Service, open_target
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    assert Service(open_target(tmp_path / "pipe")).health()["shape"] == [1, 8, 8]  # serve takes it too
    (tmp_path / "nosched").mkdir()
    unet.save_pretrained(tmp_path / "nosched")
    assert cli("sample", tmp_path / "nosched", "--n", 2, "--out", tmp_path / "x.npz") != 0
    one_line_error(capsys, 1, "no scheduler_config.json")
    assert cli("sample", tmp_path / "bare", "--n", 2, "--checkpoint", "best", "--out", tmp_path / "x.npz") != 0
    one_line_error(capsys, 1, "one set of weights")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    assert cli("train", "--data", "digits", "--out", d / "run", "--preset", "tiny", "--steps", "30", "--batch-size",
               "64", "--no-progress") == 0
    return d / "run"


def test_an_exported_run_samples_the_same_in_diffusers(digits_run, tmp_path, capsys):
    out = tmp_path / "pipe"
    assert cli("export", digits_run, out, "--format", "diffusers") == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DDIMPipeline" and index["unet"] == ["diffusekit.diffusers_io", "DiffusekitUNet"]
    pipe = DiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert isinstance(pipe, DDIMPipeline)
    generators = [torch.Generator().manual_seed(s) for s in sample_seeds(SEED, N)]
    theirs = pipe(batch_size=N, generator=generators, num_inference_steps=STEPS, output_type="np").images
    assert cli("sample", out, "--sampler", "ddim", "--schedule", "timesteps", "--steps", STEPS, "--seed", SEED,
               "--n", N, "--out", tmp_path / "s.npz", "--no-progress") == 0
    ours = np.load(tmp_path / "s.npz")["arr_0"].astype(np.float64) / 255
    # the same draws; diffusers starts from N(0, 1) in VP space, diffusekit from N(0, sigma_max^2) in sigma space:
    # at sigma_max 80 a relative difference of 8e-5
    assert theirs.shape == ours.shape == (N, 8, 8, 1) and 0.1 < theirs.std()
    np.testing.assert_allclose(ours, theirs, atol=1.01 / 255)
    # the exported network is the run's denoiser at every sigma of its table
    run, back = dk.load(digits_run), dk.load(out)
    x = torch.randn(3, 1, 8, 8)
    for sigma in (0.01, 0.3, 5.0, 70.0):
        with torch.no_grad():
            torch.testing.assert_close(back.denoiser(x * sigma, sigma), run.denoiser(x * sigma, sigma),
                                       rtol=1e-4, atol=1e-4 * max(1.0, sigma))
    assert cli("export", digits_run, out) != 0
    one_line_error(capsys, 1, "exists")
