"""inpaint / upscale / denoise / deblur through the CLI on a tiny trained digits model: outputs and bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from test_cli import cli, one_line_error
from test_likelihood_cli import digits_run  # noqa: F401 (the same tiny trained digits run)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from sklearn.datasets import load_digits

    a = (load_digits().images[:3] * 255 / 16).round().astype(np.uint8)[..., None]  # 3 x 8 x 8 x 1
    d = tmp_path_factory.mktemp("images")
    np.savez(d / "clean.npz", a)
    rng = np.random.default_rng(0)
    np.savez(d / "noisy.npz", (a / 255 + 0.1 * rng.standard_normal(a.shape)).astype(np.float32))  # unclipped
    small = torch.nn.functional.avg_pool2d(torch.tensor(a / 255.0).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    np.savez(d / "small.npz", small.numpy().astype(np.float32))
    return d, a


def test_inpaint_keeps_known_pixels_and_writes_a_figure(digits_run, images, tmp_path, capsys):
    d, a = images
    assert cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:4", "--out", tmp_path / "f.npz",
               "--steps", 4, "--compare", tmp_path / "c.png", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "RMS(y - A x) = 0.0000" in out and "c.png" in out
    f = np.load(tmp_path / "f.npz")["arr_0"]
    assert f.shape == a.shape and f.dtype == np.uint8
    known = np.ones((8, 8), bool)
    known[2:6, 2:6] = False
    assert np.array_equal(f[:, known], a[:, known])
    assert Image.open(tmp_path / "c.png").size[0] > 8


@pytest.mark.parametrize("method", ["repaint", "dps"])
def test_inpaint_methods_and_files(digits_run, images, tmp_path, method):
    d, a = images
    Image.fromarray(a[0, ..., 0]).save(tmp_path / "in.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # fill the right half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert cli("inpaint", digits_run, "--images", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "--out",
               tmp_path / "out.png", "--method", method, "--steps", 3, *(["--resample", 2] if method == "repaint" else []),
               "--no-progress") == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (8, 8)
    if method == "repaint":
        assert np.array_equal(out[:, :4], a[0, :, :4, 0])


def test_upscale_denoise_deblur(digits_run, images, tmp_path, capsys):
    d, a = images
    assert cli("upscale", digits_run, "--images", d / "small.npz", "--factor", 2, "--out", tmp_path / "u.npz",
               "--truth", d / "clean.npz", "--steps", 4, "--no-progress") == 0
    assert np.load(tmp_path / "u.npz")["arr_0"].shape == (3, 8, 8, 1)
    assert "PSNR" in capsys.readouterr().out
    assert cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", 0.1, "--out", tmp_path / "m.npz",
               "--no-progress") == 0
    assert "tweedie" in capsys.readouterr().out
    assert cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", 0.1, "--sample", "--n-samples", 2,
               "--out", tmp_path / "s.npz", "--steps", 4, "--compare", tmp_path / "s.png", "--no-progress") == 0
    s = np.load(tmp_path / "s.npz")
    assert s["arr_0"].shape == (6, 8, 8, 1) and s["mean"].shape == (3, 8, 8, 1) and s["std"].shape == (3, 8, 8, 1)
    assert (s["std"] >= 0).all() and s["std"].max() > 0
    assert cli("deblur", digits_run, "--images", d / "clean.npz", "--kernel", "gaussian:1", "--sigma", 0.01,
               "--out", tmp_path / "b", "--steps", 3, "--no-progress") == 0
    assert len(list((tmp_path / "b").glob("*.png"))) == 3


def test_bad_restoration_input(digits_run, images, tmp_path, capsys):
    d, a = images
    e = one_line_error
    np.savez(tmp_path / "big.npz", np.zeros((2, 16, 16, 1), np.uint8))
    e(capsys, cli("inpaint", digits_run, "--images", tmp_path / "big.npz", "--mask", "box:4", "--out",
                  tmp_path / "x.npz"), "16x16", "expects 8x8 with 1 channel")
    e(capsys, cli("upscale", digits_run, "--images", d / "small.npz", "--factor", 3, "--out", tmp_path / "x.npz"),
      "factor 3", "divide 8")
    e(capsys, cli("upscale", digits_run, "--images", d / "clean.npz", "--factor", 2, "--out", tmp_path / "x.npz"),
      "8x8", "expects 4x4")
    e(capsys, cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", -0.1, "--out", tmp_path / "x.npz"),
      "--sigma")
    e(capsys, cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", 0.1, "--mmse", "--sample", "--out",
                  tmp_path / "x.npz"), "choose one")
    e(capsys, cli("deblur", digits_run, "--images", d / "clean.npz", "--kernel", "gauss:1", "--out", tmp_path / "x.npz"),
      "cannot parse kernel")
    e(capsys, cli("deblur", digits_run, "--images", d / "clean.npz", "--kernel", "gaussian:1", "--method", "ddnm",
                  "--sampler", "sa-solver", "--eta", -1, "--out", tmp_path / "x.npz"), "finite numbers >= 0")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:8", "--out", tmp_path / "x.npz"),
      "masks every pixel")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "m5.png")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", tmp_path / "m5.png", "--out",
                  tmp_path / "x.npz"), "5x5", "8x8")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m0.png")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", tmp_path / "m0.png", "--out",
                  tmp_path / "x.npz"), "masks nothing")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:4", "--out", tmp_path / "x.png"),
      "holds one image")
    e(capsys, cli("inpaint", digits_run, "--images", tmp_path / "missing.npz", "--mask", "box:4", "--out",
                  tmp_path / "x.npz"), "does not exist")
    bad = np.zeros((2, 8, 8, 1), np.float32)
    bad[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", bad)
    e(capsys, cli("denoise", digits_run, "--images", tmp_path / "nan.npz", "--sigma", 0.1, "--out", tmp_path / "x.npz"),
      "NaN")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:4", "--method", "tweedie",
                  "--out", tmp_path / "x.npz"), "Gaussian denoising")
    assert not (tmp_path / "x.npz").exists()
    # checked before the restoration is spent: an existing output stays as it was
    (tmp_path / "keep.npz").write_bytes(b"KEEP")
    for extra, needle in ((("--truth", tmp_path / "big.npz"), "16x16"), (("--compare", tmp_path / "c.txt"), ".png"),
                          (("--compare", tmp_path / "big.npz" / "c.png"), "is a file, not a folder"),
                          (("--method", "dps", "--zeta", "nan"), "--zeta")):
        e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:4", "--steps", 2,
                      "--out", tmp_path / "keep.npz", *extra), needle)
    e(capsys, cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", 0.1, "--out", d / "noisy.npz"),
      "would overwrite an input")
    (tmp_path / "inp").mkdir()
    Image.fromarray(a[0, ..., 0]).save(tmp_path / "inp" / "000000.png")  # the name a folder of outputs would reuse
    e(capsys, cli("denoise", digits_run, "--images", tmp_path / "inp" / "000000.png", "--sigma", 0.1, "--out",
                  tmp_path / "inp"), "would overwrite an input")
    # options the chosen method does not read: said, not ignored
    e(capsys, cli("denoise", digits_run, "--images", d / "noisy.npz", "--sigma", 0.1, "--steps", 7, "--out",
                  tmp_path / "keep.npz"), "--steps does not apply to --method tweedie")
    e(capsys, cli("inpaint", digits_run, "--images", d / "clean.npz", "--mask", "box:4", "--zeta", 2, "--out",
                  tmp_path / "keep.npz"), "--zeta is an option of --method dps")
    assert (tmp_path / "keep.npz").read_bytes() == b"KEEP"


def test_restorations_take_the_runs_tuned_grid(digits_run, images, tmp_path, capsys):
    import shutil

    import diffusekit as dk

    d, a = images
    run_dir = shutil.copytree(digits_run, tmp_path / "run")  # a copy: the shared run keeps no tuned grids
    assert cli("tune-steps", run_dir, "--steps", 4, "--n", 16, "--candidates", 16, "--no-progress") == 0
    run = dk.load(run_dir)
    by = {g: run.inpaint(d / "clean.npz", "box:4", steps=4, grid=g) for g in (None, "tuned", "karras")}
    assert by[None].grid == by["tuned"].grid == "tuned" and np.array_equal(by[None].images, by["tuned"].images)
    assert by["karras"].grid == "karras" and not np.array_equal(by[None].images, by["karras"].images)
    assert run.inpaint(d / "clean.npz", "box:4", steps=5).grid == "karras"  # none fitted for 5 steps
    assert run.denoise(d / "noisy.npz", 0.1).grid is None and run.denoise(d / "noisy.npz", 0.1, method="sample",
                                                                          steps=3).grid == "karras"
    capsys.readouterr()
    assert cli("inpaint", run_dir, "--images", d / "clean.npz", "--mask", "box:4", "--steps", 4, "--out",
               tmp_path / "t.npz", "--no-progress") == 0
    assert "ddpm, 4 steps, tuned grid" in capsys.readouterr().out
    assert cli("inpaint", run_dir, "--images", d / "clean.npz", "--mask", "box:4", "--steps", 4, "--schedule",
               "karras", "--out", tmp_path / "k.npz", "--no-progress") == 0
    assert "ddpm, 4 steps, karras grid" in capsys.readouterr().out
    for options, message in (({"steps": 5, "grid": "tuned"}, "no tuned grid for 5 steps"),
                             ({"grid": "bogus"}, "grid must be one of")):
        with pytest.raises(dk.DiffusekitError, match=message):
            run.inpaint(d / "clean.npz", "box:4", **options)
    with pytest.raises(dk.DiffusekitError, match="grid does not apply to method tweedie"):
        run.denoise(d / "noisy.npz", 0.1, grid="karras")
    with pytest.raises(dk.DiffusekitError, match="grid does not apply to method sample"):
        run.denoise(d / "noisy.npz", 0.1, method="sample", grid="karras")


def test_a_distilled_run_refuses_to_restore(digits_run, images, tmp_path, capsys):
    import diffusekit as dk

    d, a = images
    fast = dk.distill(digits_run, tmp_path / "ct", steps=1, progress=False)
    with pytest.raises(dk.DiffusekitError, match="consistency model.*restoration needs a diffusion model's denoiser.*"
                                                 "distilled from"):
        fast.inpaint(d / "clean.npz", "box:4")
    one_line_error(capsys, cli("inpaint", fast.path, "--images", d / "clean.npz", "--mask", "box:4", "--out",
                               tmp_path / "x.npz"), "consistency model")
