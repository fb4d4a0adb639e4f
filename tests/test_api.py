"""The Python API: every capability of the command line in at most three lines, on arrays and DataFrames in memory
and on files. Tiny models and few steps: these check what goes in and comes out, not quality (the other tests and
the benchmarks do that)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits, load_wine

import diffusekit as dk

FAST = dict(steps=4, sampler="euler")  # few network calls for sampling and restoration


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, digits):
    images, labels = digits
    out = tmp_path_factory.mktemp("api") / "digits"
    run = dk.train(images, out=out, labels=labels, steps=20, preset="tiny", batch_size=32, progress=False)
    return run


@pytest.fixture(scope="module")
def wine():
    d = load_wine(as_frame=True)
    df = d.frame.iloc[:, :5].copy()
    df["kind"] = np.where(d.target == 0, "red", "white")  # a categorical column
    return df, d.target.to_numpy()


@pytest.fixture(scope="module")
def table_run(tmp_path_factory, wine):
    df, _ = wine
    return dk.train(df, out=tmp_path_factory.mktemp("api") / "wine", steps=20, preset="tiny", progress=False)


def test_train_on_arrays_dataframes_and_files(image_run, table_run, wine, tmp_path):
    assert image_run.kind == "image" and image_run.num_classes == 10 and image_run.step == 20
    assert (image_run.path / "data.npz").is_file()  # in-memory data are kept in the run, so that it can resume
    assert table_run.kind == "vector" and table_run.codec.columns == list(wine[0].columns)
    run = dk.train("toy:gmm8", out=tmp_path / "toy", steps=10, preset="tiny", progress=False)
    assert run.step == 10 and dk.load(tmp_path / "toy").step == 10
    run = dk.train(None, out=tmp_path / "toy", resume=True, steps=15, progress=False)
    assert run.step == 15


def test_sample_images_and_rows(image_run, table_run, wine):
    images = image_run.sample(6, seed=0, label=7, guidance=2.0, temperature=0.8, **FAST)
    assert images.dtype == np.uint8 and images.shape == (6, 8, 8, 1)
    assert np.array_equal(images, image_run.sample(6, seed=0, label=7, guidance=2.0, temperature=0.8, **FAST))
    rows = table_run.sample(5, seed=1, **FAST)
    assert isinstance(rows, pd.DataFrame) and list(rows.columns) == list(wine[0].columns)
    assert set(rows["kind"]) <= {"red", "white"}


def test_images_in_few_steps_default_to_the_adams_ode_on_a_grid_ending_higher(image_run, table_run, tmp_path):
    """Below SDE_MIN_STEPS an image samples with samplers.FEW_STEP_IMAGES on the karras grid bounded by FEW_STEP_GRID
    (both said by `sampling`); what is given wins, a grid of another kind or a tuned one takes no bounds, and a table
    keeps dpmpp-2m on its default grid."""
    from diffusekit.samplers import SDE_MIN_STEPS

    run = image_run
    assert run.sampling(steps=5) == "sampler sa-solver, eta 0, 5 steps, karras grid (sigma_min 0.2, rho 10)"
    by_default = run.sample(6, steps=5, seed=2)
    assert np.array_equal(by_default, run.sample(6, steps=5, seed=2, sampler="sa-solver", eta=0.0, sigma_min=0.2,
                                                  rho=10.0))
    assert not np.array_equal(by_default, run.sample(6, steps=5, seed=2, sampler="dpmpp-2m"))
    assert run.sampling(steps=SDE_MIN_STEPS) == f"sampler dpmpp-2m-sde, {SDE_MIN_STEPS} steps, karras grid"
    assert run.sampling(steps=5, sampler="dpmpp-2m") == "sampler dpmpp-2m, 5 steps, karras grid"
    assert run.sampling(steps=5, rho=5.0, eta=0.5).endswith("eta 0.5, 5 steps, karras grid (sigma_min 0.2, rho 5)")
    assert run.sampling(steps=5, grid="loguniform") == "sampler sa-solver, eta 0, 5 steps, loguniform grid"
    assert run.sample(2, steps=5, grid="loguniform").shape == (2, 8, 8, 1)
    assert table_run.sampling(steps=5) == "sampler dpmpp-2m, 5 steps, karras grid"
    import shutil
    shutil.copytree(run.path, tmp_path / "copy")
    tuned = dk.load(tmp_path / "copy")
    tuned.tune_steps([5], n=8, candidates=8)
    assert tuned.sampling(steps=5) == "sampler sa-solver, eta 0, 5 steps, the run's tuned grid"


def test_info(image_run):
    text = image_run.describe()
    assert "20 steps" in text and "10 classes" in text and str(image_run.path.resolve()) in text


def test_evaluate_arrays_and_files(image_run, digits, table_run, tmp_path):
    images = image_run.sample(8, seed=0, **FAST)
    result = dk.evaluate(images, "digits")
    assert result["fcd"] > 0 and result["n_samples"] == 8
    np.savez(tmp_path / "s.npz", images)
    assert dk.evaluate(tmp_path / "s.npz", "digits")["fcd"] == pytest.approx(result["fcd"])
    rows = table_run.sample(8, seed=0, **FAST)
    assert dk.evaluate(rows.to_numpy(), str(table_run.path / "data.csv"))["energy_distance"] > 0


def test_nll_arrays_and_files(image_run, digits, tmp_path):
    images, labels = digits
    bpd = image_run.nll(images[:3], method="elbo").bits_per_dim
    assert bpd.shape == (3,) and np.all(bpd > 0)
    np.savez(tmp_path / "x.npz", images[:3], labels[:3])
    again = image_run.nll(tmp_path / "x.npz", method="elbo")
    assert np.allclose(again.bits_per_dim, bpd) and again.summary()["bits_per_dim"] == pytest.approx(bpd.mean())


def test_encode_decode_round_trip(image_run, table_run, digits, wine):
    z = image_run.encode(digits[0][:3])
    assert z.latents.shape == (3, 1, 8, 8) and np.abs(z.latents).max() < 10
    assert np.abs(image_run.decode(z).astype(int) - digits[0][:3, ..., None]).max() <= 2
    z = table_run.encode(wine[0].iloc[:4])
    back = table_run.decode(z.latents)
    assert np.allclose(back["alcohol"], wine[0]["alcohol"][:4], rtol=1e-2) and list(back["kind"]) == list(wine[0]["kind"][:4])


@pytest.mark.parametrize("task", ["inpaint", "upscale", "denoise", "deblur"])
def test_restorations_arrays_and_files(image_run, digits, task, tmp_path):
    images = digits[0][:2]
    if task == "inpaint":
        r = image_run.inpaint(images, mask="half", n_samples=2, seed=0, **FAST)
    elif task == "upscale":
        r = image_run.upscale(images[:, ::2, ::2], factor=2, seed=0, **FAST)
    elif task == "denoise":
        r = image_run.denoise(images, sigma=0.1, truth=images)  # the posterior mean: one call, no sampler
    else:
        r = image_run.deblur(images, kernel="gaussian:1", sigma=0.01, seed=0, **FAST)
    k = 2 if task == "inpaint" else 1
    assert r.images.shape == (2 * k, 8, 8, 1) and r.images.dtype == np.uint8 and r.n_samples == k
    assert (r.mean is not None) == (k > 1) and (r.psnr is not None) == (task == "denoise")
    np.savez(tmp_path / "in.npz", images)
    if task == "inpaint":  # the same call on a file gives the same restorations
        assert np.array_equal(image_run.inpaint(tmp_path / "in.npz", mask="half", n_samples=2, seed=0, **FAST).images,
                              r.images)


def test_anomaly_fit_score_report(wine, tmp_path):
    df, target = wine
    normal, incoming, labels = df[target < 2], df.iloc[::3], (target[::3] == 2).astype(int)
    det = dk.AnomalyDetector.fit(normal, steps=20, models=1, preset="tiny")
    scores = det.score(incoming, fpr=0.1)
    assert len(scores) == len(incoming) and {"score", "p_value", "flag", "top_columns"} <= set(scores.columns)
    saved = det.save(tmp_path / "det")
    incoming.to_csv(tmp_path / "incoming.csv", index=False)
    assert np.allclose(dk.AnomalyDetector.load(tmp_path / "det").score(tmp_path / "incoming.csv", fpr=0.1)["score"],
                       scores["score"])
    report = saved.report(incoming, labels=labels, fpr=0.1)
    assert 0 <= report.summary["auroc"] <= 1 and set(report.figures()) == {"roc.png", "pr.png"}
