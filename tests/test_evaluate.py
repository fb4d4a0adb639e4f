"""The evaluator: metric ground truths on toy cases, ordering of degraded image sets, bad sample files."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import diffusekit as dk
from diffusekit.data import FASHION_MNIST_DIR, load_data
from diffusekit.evaluate import Evaluator
from diffusekit.metrics import frechet_distance, kernel_inception_distance, marginal_distances, precision_recall

from test_cli import cli, one_line_error


def test_frechet_distance_of_known_gaussians():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    a = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.5, 2.0, 0.5]) + torch.tensor([1.0, 0, 0])
    # diagonal covariances: |dmu|^2 + sum (s1 - s2)^2 = 1 + 0.25
    assert frechet_distance(a, b) == pytest.approx(1.25, abs=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_of_point_masses_is_exact_mmd():
    d = 4
    x, y = torch.full((50, d), 1.0), torch.full((60, d), -0.5)
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    exact = float(k(x[0], x[0]) + k(y[0], y[0]) - 2 * k(x[0], y[0]))
    kid, _ = kernel_inception_distance(x, y, subset_size=50, subsets=3)
    assert kid == pytest.approx(exact, rel=1e-9)
    g = torch.Generator().manual_seed(1)
    same, spread = kernel_inception_distance(torch.randn(2000, d, generator=g), torch.randn(2000, d, generator=g))
    assert abs(same) < 3 * spread + 1e-3  # unbiased: about 0 for one distribution


def test_precision_recall_known_cases():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 2, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # mode dropping: fakes cover only the right half of the real data -> high precision, recall about one half
    half = real[real[:, 0] > 0]
    p, r = precision_recall(real, half)
    assert p == 1.0 and 0.4 < r < 0.65


def test_marginal_distances():
    x = torch.randn(5000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = marginal_distances(x, x + torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert d[0] == pytest.approx(0.5, abs=1e-6) and d[1] == pytest.approx(0.0, abs=1e-9)


def blur(u8):
    x = torch.from_numpy(u8).float().permute(0, 3, 1, 2)
    k = torch.tensor([1.0, 2, 1])
    k = (k[:, None] * k[None]) / 16
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k[None, None])
    return y.permute(0, 2, 3, 1).round().clamp(0, 255).numpy().astype(np.uint8)


def degraded_sets(data, n):
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(data))
    a = data.codec.decode(data.x[perm[:n]])
    b = data.codec.decode(data.x[perm[n:2 * n]])
    noised = np.clip(b.astype(float) + rng.normal(0, 40, b.shape), 0, 255).astype(np.uint8)
    one = data.codec.decode(data.x[data.labels == 0][:n])
    return a, {"same data": b, "blurred": blur(b), "noised": noised, "one class": one}


def check_ordering(spec, data, n):
    ev = Evaluator(spec, n_boot=5)
    ref_half, sets = degraded_sets(data, n)
    fcd = {k: ev(v)["fcd"] for k, v in sets.items()}
    # the same data is near 0 (a few bootstrap standard errors) and every degradation is clearly worse
    for k in ("blurred", "noised", "one class"):
        assert fcd[k] > 10 * max(fcd["same data"], 0.05), fcd
    return fcd


def test_digits_evaluator_orders_degraded_sets():
    data = load_data("digits")
    fcd = check_ordering("digits", data, 800)
    r = Evaluator("digits", n_boot=5)(data.codec.decode(data.x[:500]))
    assert r["classifier"]["weights"] == "shipped:digits" and r["classifier"]["test_accuracy"] > 0.95
    assert sum(r["label_distribution"].values()) == pytest.approx(1.0)
    assert r["n_samples"] == 500 and fcd["same data"] < 1.0


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_test_split_against_itself():
    ev = Evaluator("fashion-mnist:test", n_boot=5)
    test = load_data("fashion-mnist:test")
    r = ev(test.codec.decode(test.x[:2000]))
    assert r["fcd"] < 0.5 and r["precision"] > 0.7 and r["recall"] > 0.7
    check_ordering("fashion-mnist:test", test, 1000)


def test_evaluate_cli_and_bad_files(tmp_path, capsys):
    data = load_data("digits")
    good = tmp_path / "good.npz"
    np.savez(good, arr_0=data.codec.decode(data.x[:300]))
    assert cli("evaluate", good, "--reference", "digits", "--json", tmp_path / "r.json", "--bootstrap", 3) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert {"fcd", "fcd_se", "kid", "precision", "recall", "n_samples", "label_distribution"} <= set(r)
    capsys.readouterr()
    empty = tmp_path / "empty.npz"
    np.savez(empty, arr_0=np.zeros((0, 8, 8, 1), np.uint8))
    one_line_error(capsys, cli("evaluate", empty, "--reference", "digits"), "no samples")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, arr_0=np.zeros((10, 28, 28, 1), np.uint8))
    one_line_error(capsys, cli("evaluate", wrong, "--reference", "digits"), "expects 8x8")
    one_line_error(capsys, cli("evaluate", tmp_path / "missing.npz", "--reference", "digits"), "does not exist")
    vec = tmp_path / "vec.npz"
    np.savez(vec, arr_0=np.zeros((10, 2), np.float32))
    one_line_error(capsys, cli("evaluate", vec, "--reference", "digits"), "vectors")


def test_vector_evaluation(tmp_path):
    from diffusekit.data.toys import toy_data

    ev = Evaluator("toy:moons", n_boot=3)
    good = ev(toy_data("moons", 2000, seed=5))
    bad = ev(toy_data("moons", 2000, seed=5) + np.array([0.5, 0.0]))
    assert good["energy_distance"] < 0.01 < bad["energy_distance"]
    assert bad["marginal_w1"]["x0"] == pytest.approx(0.5, abs=0.05)


def test_train_eval_every_keeps_best(tmp_path):
    out = tmp_path / "ev"
    assert cli("train", "--data", "digits", "--out", out, "--preset", "tiny", "--steps", 20, "--batch-size", 32,
               "--eval-every", 10, "--eval-samples", 50, "--sample-every", 5, "--no-progress") == 0
    assert len(os.listdir(out / "samples")) == 4  # steps 5, 10, 15, 20 (mid-run sampling must not disturb training)
    rows = (out / "eval.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,n_samples,fcd") and [r.split(",")[0] for r in rows[1:]] == ["10", "20"]
    best = min(float(r.split(",")[2]) for r in rows[1:])
    state = json.loads((out / "best" / "state.json").read_text())
    assert state["score"] == pytest.approx(best, rel=1e-4)
    assert cli("sample", out, "--checkpoint", "best", "--n", 2, "--steps", 2, "--out", tmp_path / "b.npz",
               "--no-progress") == 0


def test_memorisation_report_flags_a_memorising_model_and_passes_a_full_data_one(tmp_path, capsys):
    from sklearn.datasets import load_digits

    from diffusekit.cli import main
    from diffusekit.evaluate import NEAR_COPY_RATIO, memorisation

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)
    shares = {}
    for name, n in (("memorising", 16), ("full", len(images))):  # the same steps and batch: the same compute
        run = dk.train(images[:n], out=tmp_path / name, steps=400, preset="tiny", batch_size=16, progress=False)
        samples = run.sample(32, seed=1)
        report = memorisation(samples, images[:n])
        shares[name] = report.summary()["share_near_copies"]
        assert report.nearest.shape == (32,) and (report.ratio >= 0).all() and (report.ratio <= 1).all()
        np.testing.assert_array_equal(report.near_copies, report.d1 < NEAR_COPY_RATIO * report.d2)
    assert shares["memorising"] >= 0.25 and shares["full"] <= 0.05, shares
    np.savez(tmp_path / "s.npz", samples)
    np.savez(tmp_path / "train.npz", images)
    main(["evaluate", str(tmp_path / "s.npz"), "--reference", "digits", "--training", str(tmp_path / "train.npz"),
          "--neighbours", str(tmp_path / "n.png"), "--bootstrap", "2"])
    out = capsys.readouterr().out
    assert '"share_near_copies"' in out and (tmp_path / "n.png").stat().st_size > 100
