"""Anomaly detection: conformal calibration, a 2-D toy end to end, breast-cancer tables through the CLI, bad input."""
import csv
import ctypes
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from diffusekit import checkpoint
from diffusekit.anomaly import flag_rate, conformal_p_values, min_variance_weights, normal_scores
from diffusekit.errors import DiffusekitError
from diffusekit.detector import AnomalyDetector
from test_cli import cli, interrupted, one_line_error

e = one_line_error


def test_conformal_p_values_are_valid_and_exact():
    cal = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = conformal_p_values(torch.tensor([0.0, 2.0, 2.5, 9.0]), cal)
    assert torch.allclose(p, torch.tensor([5 / 5, 4 / 5, 3 / 5, 1 / 5], dtype=torch.float64))
    # validity: for exchangeable normal scores, P(p <= a) <= a; averaged over many calibration draws it is ~a
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(200):
        s = torch.randn(120, generator=g)
        rates.append(float((conformal_p_values(s[100:], s[:100]) <= 0.1).double().mean()))
    assert abs(np.mean(rates) - 0.1) < 0.02 and np.mean(rates) <= 0.1 + 0.02


def test_min_variance_weights():
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, 20000, generator=g, dtype=torch.float64)
    # independent scores: weights proportional to 1 / variance
    w = min_variance_weights(torch.stack([a, 2 * b], 1))
    assert torch.allclose(w, torch.tensor([0.8, 0.2], dtype=w.dtype), atol=0.02)
    # a score that repeats another shares its weight instead of counting twice
    w = min_variance_weights(torch.stack([a, a, c], 1))
    assert abs(float(w[2]) - 0.5) < 0.02 and abs(float(w[0] + w[1]) - 0.5) < 0.02
    # the unconstrained optimum would bet against the noisier copy (negative weight): it gets none
    w = min_variance_weights(torch.stack([a, 2 * a + 0.1 * b], 1))
    assert float(w[1]) == 0 and float(w[0]) == 1
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-9


def test_normal_scores_keep_only_ranks():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 20000, generator=g, dtype=torch.float64)
    heavy = b.exp()  # a long right tail, as the neighbour distance has on normal images, in robust z units:
    heavy = (heavy - heavy.median()) / (1.4826 * (heavy - heavy.median()).abs().median())  # variance 6.4
    n = normal_scores(torch.stack([a, heavy], 1))
    # any increasing map of a column gives the same normal scores, standard normal in the bulk
    assert torch.allclose(n, normal_scores(torch.stack([5 * a - 2, 2 * b], 1)))
    assert abs(float(n[:, 1].std()) - 1) < 0.01 and abs(float(n[:, 1].median())) < 0.01
    # ties share their mean rank: half the samples at 0 all get the quantile of the first half's mean rank
    t = normal_scores(torch.cat([torch.zeros(100), torch.arange(1.0, 101)])[:, None])[:, 0]
    assert torch.allclose(t[:100], torch.special.ndtri(torch.tensor((50.5 - 0.5) / 200, dtype=torch.float64)))
    assert (t[101:] > t[100:-1]).all()
    # the weights see how scores move together, not their tails: two independent scores weigh alike, where the
    # variance of the robust z-scores gives the long-tailed one a seventh
    assert torch.allclose(min_variance_weights(n), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.02)
    assert float(min_variance_weights(torch.stack([a, heavy], 1))[1]) < 0.15


def test_flag_rate():
    assert flag_rate(0.01, 99) == (0.01, None)
    # too few calibration scores for the asked rate: the smallest p-value they can give, 1 / (n + 1), said plainly
    rate, note = flag_rate(0.01, 20)
    assert rate == 1 / 21 and "needs at least 99" in note and "has 20" in note and "0.04762" in note
    # below 1 / (n + 1) nothing could be flagged: at that rate the smallest p-value is flagged
    p = conformal_p_values(torch.tensor([5.0, 0.5]), torch.arange(20.0) / 20)
    assert (p <= rate).tolist() == [True, False]
    for bad in (0.0, 1.0, -0.1, float("nan"), "x", None, True):
        with pytest.raises(DiffusekitError, match=r"\(0, 1\)"):
            flag_rate(bad, 1000)


def gmm8_points(n, seed):
    from diffusekit.analytic import gmm8

    return gmm8().sample(n, torch.Generator().manual_seed(seed)).numpy()


def write_csv(path, values, columns):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(values.tolist())


@pytest.fixture(scope="module")
def toy_detector(tmp_path_factory):
    d = tmp_path_factory.mktemp("anomaly")
    write_csv(d / "normal.csv", gmm8_points(3000, 0), ["a", "b"])
    # 1,000 steps: AUROC 0.9998 below (0.99998 with 3,000)
    assert cli("anomaly", "fit", "--data", d / "normal.csv", "--out", d / "det", "--steps", 1000, "--models", 1,
               "--no-progress") == 0
    return d


def test_toy_anomalies_off_the_support(toy_detector, tmp_path, capsys):
    d = toy_detector
    normal = gmm8_points(500, 1)
    g = np.random.default_rng(2)
    angle = g.uniform(0, 2 * np.pi, 500)
    radius = np.concatenate([g.uniform(0, 1.5, 250), g.uniform(6.5, 8, 250)])  # inside the ring and outside it
    anomalies = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    rows = np.concatenate([np.concatenate([normal, anomalies]), np.r_[np.zeros(500), np.ones(500)][:, None]], 1)
    write_csv(tmp_path / "labelled.csv", rows, ["a", "b", "is_anomaly"])
    assert cli("anomaly", "report", d / "det", "--data", tmp_path / "labelled.csv", "--label-column", "is_anomaly",
               "--out", tmp_path / "rep", "--fpr", 0.05, "--no-progress") == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["auroc"] >= 0.99, rep
    assert (tmp_path / "rep" / "roc.png").exists() and (tmp_path / "rep" / "pr.png").exists()
    runs = [json.loads(c.read_text())["train"] for c in (d / "det").glob("*/config.json")]
    # the detector's models train at the constant rate its scores were measured with, not a table's recipe
    assert runs and all(r["lr_decay_frac"] == 0.0 and r["holdout"] == 0.0 for r in runs), runs
    assert "AUROC" in capsys.readouterr().out


def test_calibration_on_fresh_normal_data(toy_detector, tmp_path):
    d = toy_detector
    n, a = 1000, 0.05
    write_csv(tmp_path / "fresh.csv", gmm8_points(n, 7), ["a", "b"])
    assert cli("anomaly", "score", d / "det", "--data", tmp_path / "fresh.csv", "--out", tmp_path / "s.csv", "--fpr", a,
               "--no-progress") == 0
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    flagged = np.mean([int(r[f"flag_at_fpr_{a:g}"]) for r in rows])
    n_cal = json.loads((d / "det" / "detector.json").read_text())["n_calibration"]
    # conformal: E[flagged] <= a; for one calibration set of n_cal it varies by about sqrt(a(1-a)/n_cal), plus the
    # binomial spread of n fresh points: allow three of both
    slack = 3 * math.sqrt(a * (1 - a) / n_cal + a * (1 - a) / n)
    assert flagged <= a + slack, (flagged, slack)
    assert flagged >= a - slack - 0.02  # and it does flag: the threshold is not vacuous
    assert rows[0]["top_columns"]


def test_breast_cancer_end_to_end(tmp_path, capsys):
    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer()
    cols = [c.replace(" ", "_") for c in bc.feature_names]
    benign, malignant = bc.data[bc.target == 1], bc.data[bc.target == 0]
    g = np.random.default_rng(0)
    benign = benign[g.permutation(len(benign))]
    write_csv(tmp_path / "normal.csv", benign[:300], cols)
    test = np.concatenate([benign[300:], malignant[:60]])
    labels = np.r_[np.zeros(len(benign) - 300), np.ones(60)]
    write_csv(tmp_path / "test.csv", np.concatenate([test, labels[:, None]], 1), cols + ["malignant"])
    assert cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det", "--steps", 500,
               "--no-progress") == 0
    assert cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "test.csv", "--label-column", "malignant",
               "--out", tmp_path / "rep", "--fpr", 0.1, "--no-progress") == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["auroc"] > 0.8, rep  # three models of 500 steps (0.936; 0.943 with 1,500); the benchmark has the real one
    info = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert info["runs"] == ["run", "run2", "run3"] and "run" not in info  # a table: three models by default
    assert info["stats"]["profile_one_sided"]
    # the nearest-neighbour score in the residual MLP's representation: every training and fit row is a reference
    assert info["stats"]["neighbours"]["n_reference"] == info["n_train"] + info["n_fit"], info["stats"]["neighbours"]
    assert (tmp_path / "det" / info["reference"]).is_file() and "neighbours" in info["stats"]["weights"]
    assert rep["auroc_per_component"]["neighbours"] > 0.8, rep
    assert len({json.loads((tmp_path / "det" / r / "config.json").read_text())["train"]["seed"] for r in info["runs"]}) == 3
    e = one_line_error
    capsys.readouterr()
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", "--models", 0),
      "at least 1")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", "--run",
                  tmp_path / "det" / "run", "--models", 2), "--run once per run")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", "--run",
                  tmp_path / "det" / "run", "--minutes", 5), "--minutes is a training setting")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", "--batch-size", 0),
      "at least 1")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", "--seed", -1), ">= 0")
    for budget in (("--steps", -5), ("--minutes", "nan")):  # refused before normal_train is written (a retry works)
        e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det3", *budget),
          "give a training budget")
    assert not (tmp_path / "det3").exists()
    # a fit that did not finish (models, no detector.json): a retry says so and replaces nothing
    shutil.copytree(tmp_path / "det" / "run", tmp_path / "left" / "run")
    (tmp_path / "left" / "normal_train.csv").write_text("MARKER\n")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "left", "--steps", 1),
      "did not finish", "normal_train.csv, run")
    assert (tmp_path / "left" / "normal_train.csv").read_text() == "MARKER\n"
    # scores never overwrite the data they score or the detector's files
    for out, what in ((tmp_path / "normal.csv", "an input of this command"), (tmp_path / "det" / "normal_train.csv", "of the detector")):
        before = out.read_bytes()
        e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", out, "--fpr", 0.1),
          "would overwrite", what)
        assert out.read_bytes() == before
    # nor a file of its models, nor a folder where the scores file would go; all said before scoring
    log = tmp_path / "det" / "run" / "log.csv"
    before = log.read_bytes()
    (tmp_path / "adir.csv").mkdir()
    for out, what in ((log, "would write into the run"), (tmp_path / "det" / "run" / "last" / "new.csv", "into the run"),
                      (tmp_path / "adir.csv", "existing folder")):
        e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", out, "--fpr", 0.1),
          what)
    assert log.read_bytes() == before and not (tmp_path / "det" / "run" / "last" / "new.csv").exists()
    (tmp_path / "afile").write_text("x")
    e(capsys, cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "test.csv", "--label-column", "malignant",
                  "--out", tmp_path / "afile", "--fpr", 0.1), "existing file")
    # labels other than 0 and 1: an error, not a guess
    for bad, needle in ((0.4, "got 0.4"), (2, "got 2"), (-1, "got -1")):
        write_csv(tmp_path / "lab.csv", np.concatenate([test, np.where(labels == 1, bad, 0)[:, None]], 1),
                  cols + ["malignant"])
        e(capsys, cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "lab.csv", "--label-column",
                      "malignant", "--out", tmp_path / "r4", "--fpr", 0.1), "labels must be 0 (normal) or 1", needle)
    assert not (tmp_path / "r4").exists()
    # a corrupt or incomplete detector.json: said when it is loaded, in one line
    shutil.copytree(tmp_path / "det", tmp_path / "bad")
    st = info["stats"]
    for text, msg in (("[]", "corrupt"), (json.dumps({**info, "stats": {"weights": {}}}), "incomplete"),
                      (json.dumps({**info, "calibration": "abc"}), "calibration must be"),
                      (json.dumps({**info, "calibration": []}), "calibration must be"),
                      (json.dumps({**info, "n_calibration": "x"}), "n_calibration must be"),
                      (json.dumps({**info, "columns": None}), "must name its columns"),
                      (json.dumps({**info, "stats": {**st, "weights": {"profile": 1.0}}}), "same scores"),
                      (json.dumps({**info, "stats": {**st, "profile_mean": st["profile_mean"][1:]}}), "profile_precision"),
                      (json.dumps({**info, "stats": {**st, "profile_bins": 100}}), "profile_bins must be"),
                      (json.dumps({**info, "stats": {**st, "mad": {**st["mad"], "profile": 0}}}), "mad must be positive"),
                      (json.dumps({**info, "stats": {**st, "per_dim_std": [0.0] * len(st["per_dim_std"])}}), "per_dim_std"),
                      (json.dumps({**info, "stats": {**st, "per_dim_mean": [0.0], "per_dim_std": [1.0]}}), "per dimension"),
                      (json.dumps({**info, "draws": 0}), "draws must be"), (json.dumps({**info, "seed": "x"}), "seed must be")):
        (tmp_path / "bad" / "detector.json").write_text(text)
        e(capsys, cli("anomaly", "score", tmp_path / "bad", "--data", tmp_path / "normal.csv", "--out", tmp_path / "s.csv",
                      "--fpr", 0.1), msg)
    # columns that differ from fit: named
    write_csv(tmp_path / "fewer.csv", test[:, 1:], cols[1:])
    e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "fewer.csv", "--out", tmp_path / "s.csv", "--fpr", 0.1),
      "columns differ", cols[0])
    e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "test.csv", "--out", tmp_path / "s.csv", "--fpr", 0.1),
      "columns differ", "unexpected 'malignant'")
    e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", tmp_path / "s.csv",
                  "--fpr", 1.5), "(0, 1)")
    # a rate the calibration set cannot support: scored all the same, flagged at the lowest rate it does, said so
    n_cal = json.loads((tmp_path / "det" / "detector.json").read_text())["n_calibration"]
    assert cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", tmp_path / "low.csv",
               "--fpr", 0.001, "--no-progress") == 0
    assert "needs at least 999" in capsys.readouterr().out
    low = pd.read_csv(tmp_path / "low.csv")
    assert list(low.columns[:4]) == ["index", "score", "p_value", f"flag_at_fpr_{1 / (n_cal + 1):.4g}"]
    assert low["p_value"].notna().all() and (low.iloc[:, 3] == (low["p_value"] <= 1.00001 / (n_cal + 1))).all()
    e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", tmp_path / "s.csv",
                  "--maps", tmp_path / "maps", "--fpr", 0.1), "for images")
    e(capsys, cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "test.csv", "--label-column", "nope",
                  "--out", tmp_path / "r2", "--fpr", 0.1), "no column 'nope'")
    e(capsys, cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", tmp_path / "r3",
                  "--fpr", 0.1), "needs labels")
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det"), "already holds")
    with open(tmp_path / "missing.csv", "w") as f:
        f.write(",".join(cols) + "\n" + ",".join(["1"] * (len(cols) - 1) + [""]) + "\n" + ",".join(["1"] * len(cols))
                + "\n")
    e(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "missing.csv", "--out", tmp_path / "s.csv", "--fpr", 0.1),
      "missing values (row 1)", "had none in the training data")
    e(capsys, cli("anomaly", "score", tmp_path / "nowhere", "--data", tmp_path / "test.csv", "--out", tmp_path / "s.csv", "--fpr", 0.1),
      "not a detector")
    write_csv(tmp_path / "tiny.csv", benign[:30], cols)
    e(capsys, cli("anomaly", "fit", "--data", tmp_path / "tiny.csv", "--out", tmp_path / "det2", "--minutes", 0.05,
                  "--preset", "tiny"), "too little held-out normal data")
    assert not (tmp_path / "s.csv").exists()


def test_default_holdout_keeps_forty_rows_where_thirty_are_left_to_train():
    """78 normal rows (60% of wine's two normal classes) hold out 40 and train on 38; large sets hold out 30%;
    under 70 rows half, and `fit` then says the data are too few."""
    from diffusekit.anomaly import default_holdout

    held = {n: int(round(default_holdout(n) * n)) for n in (50, 69, 70, 78, 133, 200, 1000)}
    assert held == {50: 25, 69: 39, 70: 40, 78: 40, 133: 40, 200: 60, 1000: 300}, held


def test_rows_the_model_learned_by_heart_are_not_flagged(tmp_path):
    """A small table's network learns its rows by heart and denoises them far better than held-out normal rows.
    That is no evidence of an anomaly: scoring the normal data the detector was fit on flags about the target rate
    (with a two-sided profile it flagged 68 of these 130 rows at --fpr 0.1)."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    write_csv(tmp_path / "normal.csv", wine.data[wine.target != 2], [f"c{i}" for i in range(13)])
    assert cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--out", tmp_path / "det", "--steps", 2000,
               "--models", 1, "--no-progress") == 0
    assert cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "normal.csv", "--out", tmp_path / "own.csv",
               "--fpr", 0.1, "--no-progress") == 0
    with open(tmp_path / "own.csv") as f:
        flagged = np.mean([int(r["flag_at_fpr_0.1"]) for r in csv.DictReader(f)])
    assert flagged <= 0.2, flagged


def test_a_column_constant_up_to_rounding_is_treated_as_constant():
    from diffusekit.data.codecs import VectorCodec

    values = np.zeros((50, 3))
    values[:, 0] = np.random.default_rng(0).normal(size=50)
    values[1, 1] = 1e-30  # float round-trip dust: without care its std (1e-31) standardizes 1.0 to 1e31
    values[:, 2] = 4.0
    codec = VectorCodec.fit(values)
    x = codec.encode(np.array([[0.0, 1.0, 4.0]]))
    assert torch.isfinite(x).all() and float(x.abs().max()) < 10 and codec.std[1] == 1.0 and codec.std[2] == 1.0


def test_complexity_correction_removes_a_linear_dependence():
    from diffusekit.anomaly import component_scores, fit_stats

    g = torch.Generator().manual_seed(0)
    n = 400
    c = 2 + torch.rand(n, generator=g, dtype=torch.float64)  # PNG bits/dim
    noise = lambda: 0.1 * torch.randn(n, generator=g, dtype=torch.float64)  # noqa: E731
    raw = {"profile": torch.randn(n, 3, generator=g, dtype=torch.float64),
           "per_dim": torch.rand(n, 1, 2, 2, generator=g),
           "reconstruction": 3 * c + noise(), "likelihood": noise(), "complexity": c}
    stats = fit_stats(raw)
    a, b = stats["complexity_line"]["reconstruction"]
    assert abs(b - 3) < 0.05 and set(stats["complexity_line"]) == {"reconstruction"}  # likelihood: its own correction
    # a simple image whose error is as low as its complexity predicts is normal; the raw error would call it very normal
    new = {k: v[:2].clone() for k, v in raw.items()}
    new["complexity"] = torch.tensor([0.5, 0.5], dtype=torch.float64)
    new["reconstruction"] = torch.tensor([1.5, 2.5], dtype=torch.float64)  # on the line, and 1.0 (10 spreads) above
    r = component_scores(new, stats)["reconstruction"]
    assert abs(float(r[0])) < 0.05 and abs(float(r[1]) - 1.0) < 0.05


@pytest.fixture(scope="module")
def digits_detector(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    assert cli("train", "--data", "digits", "--out", d / "run", "--preset", "tiny", "--steps", 120, "--batch-size", 64,
               "--no-progress") == 0
    from diffusekit.data import load_data

    data = load_data("digits")
    x = data.codec.decode(data.x)  # uint8 [N, 8, 8, 1]
    np.savez(d / "normal.npz", x[:600])
    # the shipped classifier is known by the data spec's name
    assert cli("anomaly", "fit", "--data", "digits", "--run", d / "run", "--out", d / "det", "--features",
               "--no-progress") == 0
    return d, x


def test_images_scores_maps_and_features(digits_detector, tmp_path, capsys):
    d, x = digits_detector
    info = json.loads((d / "det" / "detector.json").read_text())
    assert info["features"] and info["draws"] == 4  # 8x8: 256 / 64
    # one model, all 8 levels, two-sided
    assert "run" not in info and info["stats"]["profile_bins"] == 8
    assert not info["stats"]["profile_one_sided"]
    assert set(info["stats"]["complexity_line"]) == {"reconstruction", "reconstruction_features"}
    # anomalies: digits with a white 3x3 patch at a random place (the clean ones were in the fit or calibration half:
    # the model trained on every digit, and --run holds all of --data out)
    test = x[1000:1200].copy()
    g = np.random.default_rng(0)
    where = []
    for i in range(100):  # on the dark background: a patch on a white stroke would change nothing
        im = test[100 + i, :, :, 0].astype(float)
        spots = [(r, c) for r in range(6) for c in range(6) if im[r:r + 3, c:c + 3].mean() < 64]
        r, c = spots[g.integers(len(spots))]
        test[100 + i, r:r + 3, c:c + 3] = 255
        where.append((r, c))
    np.savez(tmp_path / "test.npz", test, np.r_[np.zeros(100), np.ones(100)].astype(np.int64))
    assert cli("anomaly", "report", d / "det", "--data", tmp_path / "test.npz", "--out", tmp_path / "rep",
               "--fpr", 0.05, "--no-progress") == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["auroc"] > 0.95, rep  # 0.986 when written
    # the nearest-neighbour score: --run holds all of --data out, so its reference is the fit half (leave-one-out)
    assert info["stats"]["neighbours"]["n_reference"] == info["n_fit"] and "neighbours" in info["stats"]["weights"]
    assert rep["auroc_per_component"]["neighbours"] > 0.8, rep
    assert cli("anomaly", "score", d / "det", "--data", tmp_path / "test.npz", "--out", tmp_path / "s.csv",
               "--maps", tmp_path / "maps", "--fpr", 0.05, "--no-progress") == 0
    with open(tmp_path / "s.csv") as f:
        assert {"z_reconstruction_features", "z_neighbours"} <= set(next(csv.reader(f)))
    from PIL import Image

    hits = 0
    for i, (r, c) in enumerate(where):
        m = np.asarray(Image.open(tmp_path / "maps" / f"{100 + i:06d}.png"), dtype=float)
        inside = m[r:r + 3, c:c + 3].mean()
        hits += inside > m.mean()
    assert hits >= 90, hits  # (96 when written) the map is brighter on the patch than on the image as a whole
    capsys.readouterr()
    one_line_error(capsys, cli("anomaly", "fit", "--data", d / "normal.npz", "--run", d / "run", "--out",
                               tmp_path / "det2", "--features"), "shipped classifier")
    # --maps at an existing file: said before scoring; the scores file written above stays as it was
    (tmp_path / "mapsfile").write_text("x")
    before = (tmp_path / "s.csv").read_bytes()
    one_line_error(capsys, cli("anomaly", "score", d / "det", "--data", tmp_path / "test.npz", "--out", tmp_path / "s.csv",
                               "--maps", tmp_path / "mapsfile", "--fpr", 0.05, "--no-progress"), "existing file")
    assert (tmp_path / "s.csv").read_bytes() == before
    # --resume is for a table's streamed CSV; images are scored at once: said, nothing written
    one_line_error(capsys, cli("anomaly", "score", d / "det", "--data", tmp_path / "test.npz", "--out", tmp_path / "s.csv",
                               "--resume", "--no-progress"), "--resume continues the scores of a CSV table")
    assert (tmp_path / "s.csv").read_bytes() == before
    # a detector folder without its reference, or with a spoiled one: one line, nothing written
    ref = json.loads((d / "det" / "detector.json").read_text())["reference"]
    for spoil, needle in ((lambda f: f.unlink(), f"lacks {ref}"),
                          (lambda f: f.write_bytes(b"not a tensor file"), "corrupt"),
                          (lambda f: save_file({"other": torch.zeros(2, 2)}, str(f)), "holds no 'representation'")):
        shutil.copytree(d / "det", tmp_path / "det3")
        spoil(tmp_path / "det3" / ref)
        one_line_error(capsys, cli("anomaly", "score", tmp_path / "det3", "--data", tmp_path / "test.npz", "--out",
                                   tmp_path / "s3.csv", "--no-progress"), needle)
        assert not (tmp_path / "s3.csv").exists()
        shutil.rmtree(tmp_path / "det3")
    # a model whose outputs are not finite (a diverged or spoiled run): one line, no scores
    from diffusekit.detector import AnomalyDetector as Detector

    det = Detector.load(d / "det")
    with torch.no_grad():
        next(det.run.denoiser.parameters()).fill_(float("nan"))
    with pytest.raises(DiffusekitError, match="not finite"):
        det.scores(det.run.codec.encode(x[:8]))


def test_neighbour_distance_leaves_a_reference_row_out_of_its_own_neighbours():
    from diffusekit.anomaly import neighbour_distance

    ref = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert neighbour_distance(ref[:3], ref, k=1).tolist() == [0, 0, 0]
    assert neighbour_distance(ref[:3], ref, k=1, self_index=torch.tensor([0, 1, 2])).tolist() == [1, 1, 2]
    assert neighbour_distance(ref[:3], ref, k=2, self_index=torch.tensor([0, -1, 2])).tolist() == [2, 0.5, 2.5]
    assert neighbour_distance(torch.tensor([[10.0]]), ref, k=9).tolist() == [(10 + 9 + 7 + 3) / 4]  # k > rows: all


@pytest.mark.parametrize("kind", ["image", "table"])
def test_the_reference_holds_training_and_fit_samples_never_calibration_ones(kind, tmp_path, monkeypatch):
    """A detector that trains its model(s): the reference is a seeded subset (capped) of the samples the models
    trained on and the fit half; a calibration sample is never in it (its distance would then be smaller than a new
    sample's). Images: the U-Net's bottleneck; tables: the residual MLP's (three models side by side)."""
    from sklearn.datasets import load_breast_cancer

    from diffusekit import anomaly
    from diffusekit.anomaly import _split
    from diffusekit.detector import AnomalyDetector as Detector
    from diffusekit.data import load_data

    # almost no noise: a sample's representation is then (nearly) the same whichever draw made it
    from diffusekit import detector

    monkeypatch.setattr(detector, "MAX_REFERENCE", 300)
    for module in (anomaly, detector):
        monkeypatch.setattr(module, "REPRESENTATION_LEVEL", 1e-4)
    if kind == "image":
        data = load_data("digits")
    else:  # 357 benign rows: 250 train, 53 fit, 54 calibrate; 303 candidates for 300 places
        bc = load_breast_cancer()
        write_csv(tmp_path / "benign.csv", bc.data[bc.target == 1], [c.replace(" ", "_") for c in bc.feature_names])
        data = load_data(str(tmp_path / "benign.csv"))
    det = Detector.fit(data, tmp_path / "det", steps=5, preset="tiny", device="cpu")
    i = det.info
    ref = det.reference["representation"]
    assert i["stats"]["neighbours"]["n_reference"] == 300 == len(ref)
    assert sorted(det.reference) == (["representation"] if kind == "image" else ["input", "representation"])
    held = _split(len(data.x), i["seed"], i["n_fit"] + i["n_calibration"])[1]
    rest = torch.ones(len(data.x), dtype=torch.bool)
    rest[held] = False
    x, _ = det.encode(data)

    def nearest(rows):
        rep = anomaly.representation(det.run, x[rows], [0] * len(rows))
        return torch.cdist(rep, ref).min(1).values

    def nearest_input(rows):  # tables: the same samples in the standardized columns themselves
        return torch.cdist(x[rows], det.reference["input"]).min(1).values

    for dist in (nearest, nearest_input) if kind != "image" else (nearest,):
        typical = float(dist(held).median())
        found = [int((dist(rows) < 0.01 * typical).sum())
                 for rows in (rest.nonzero().flatten(), held[:i["n_fit"]], held[i["n_fit"]:])]
        assert found[0] > 100 and found[1] > 20 and sum(found[:2]) == 300, found  # training and fit samples, all
        assert found[2] == 0, found  # no calibration sample
    loaded = Detector.load(tmp_path / "det").reference
    assert loaded.keys() == det.reference.keys() and all(torch.equal(loaded[k], det.reference[k]) for k in loaded)


def test_profile_scale_is_out_of_sample_on_small_fit_splits():
    """With 20 fit rows in 8 dimensions the rows that fitted the Gaussian sit closer to it than new normal rows: the
    profile's robust scale comes from out-of-fold distances, so new normal data get z-scores of spread about 1."""
    from diffusekit.anomaly import combine, fit_stats

    g = torch.Generator().manual_seed(0)

    def normal(n):
        return {"profile": torch.randn(n, 8, generator=g, dtype=torch.float64),
                "per_dim": torch.rand(n, 2, generator=g),
                "reconstruction": torch.randn(n, generator=g, dtype=torch.float64),
                "likelihood": torch.randn(n, generator=g, dtype=torch.float64)}

    spreads = []
    for _ in range(60):
        z = combine(normal(2000), fit_stats(normal(20)))[1]["profile"]
        spreads.append(float(1.4826 * (z - z.median()).abs().median()))
    assert 0.85 < np.mean(spreads) < 1.2, np.mean(spreads)  # in-sample distances give about 1.4


def test_refit_reproduces_the_fit_and_checks_the_data(toy_detector, tmp_path):
    from diffusekit.detector import AnomalyDetector as Detector
    from diffusekit.data import Data, load_data

    d = toy_detector
    shutil.copytree(d / "det", tmp_path / "det")  # the module's detector stays as it was
    f = tmp_path / "det" / "detector.json"
    before = json.loads(f.read_text())
    weights = {k: float(k == "likelihood") for k in before["stats"]["weights"]}
    info = dict(before, calibration=[0.0] * before["n_calibration"], stats=dict(before["stats"], weights=weights))
    f.write_text(json.dumps(info))  # spoiled: refit must write it again
    det = Detector.load(tmp_path / "det")
    data = load_data(str(d / "normal.csv"))
    with pytest.raises(DiffusekitError, match="3000 samples"):
        det.refit(Data(data.x[:100], None, data.codec))
    with pytest.raises(DiffusekitError, match="differ"):
        det.refit(Data(data.x.flip(0), None, data.codec))
    det.refit(data)  # same held-out rows, same seeds: the same statistics
    after = json.loads(f.read_text())
    assert np.allclose(before["calibration"], after["calibration"]) and before["stats"]["weights"] == pytest.approx(
        after["stats"]["weights"])
    # a refit stopped after writing its reference, before detector.json: the detector is the previous one, whole
    rows = pd.DataFrame(data.codec.decode(data.x[:50]), columns=data.codec.columns)
    scores = Detector.load(tmp_path / "det").score(rows)
    (tmp_path / "det" / after["reference"]).rename(tmp_path / "det" / "reference.safetensors")  # an older detector's name
    after.pop("reference")
    f.write_text(json.dumps(after))
    import diffusekit.detector as detector

    def stopped(*a):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(detector, "write_json_atomic", stopped)
        with pytest.raises(KeyboardInterrupt):
            Detector.load(tmp_path / "det").refit(data)
    assert len(list((tmp_path / "det").glob("reference*.safetensors"))) == 2 and "reference" not in json.loads(f.read_text())
    again = Detector.load(tmp_path / "det").score(rows)
    assert np.array_equal(again["score"], scores["score"])
    Detector.load(tmp_path / "det").refit(data)  # completed: the one reference it names is left
    assert [p.name for p in (tmp_path / "det").glob("reference*.safetensors")] == [json.loads(f.read_text())["reference"]]


def test_an_ensemble_is_the_mean_denoiser(tmp_path, capsys):
    """MeanDenoiser averages its members exactly; load_ensemble refuses runs of other data, in one line."""
    from diffusekit import load as load_run
    from diffusekit.run import Run

    load_ensemble = Run.ensemble
    from diffusekit.precond import MeanDenoiser

    class Ones(torch.nn.Module):
        def forward(self, x, sigma, class_labels=None):
            return torch.ones_like(x)

    class Shrink(torch.nn.Module):  # the exact denoiser of N(0, I)
        def forward(self, x, sigma, class_labels=None):
            return x / (1 + sigma**2)

    mean = MeanDenoiser([Ones(), Shrink()])
    x = torch.randn(4, 3)
    assert torch.allclose(mean(x, 2.0), (1 + x / 5) / 2)

    write_csv(tmp_path / "a.csv", gmm8_points(300, 0), ["a", "b"])
    assert cli("train", "--data", tmp_path / "a.csv", "--out", tmp_path / "r1", "--steps", 20, "--seed", 1,
               "--no-progress") == 0
    assert cli("train", "--data", tmp_path / "a.csv", "--out", tmp_path / "r2", "--steps", 20, "--seed", 2,
               "--no-progress") == 0
    ens = load_ensemble([tmp_path / "r1", tmp_path / "r2"])
    one, two = load_run(tmp_path / "r1"), load_run(tmp_path / "r2")
    x = torch.randn(8, 2)
    with torch.no_grad():
        assert torch.allclose(ens.denoiser(x, 0.5), (one.denoiser(x, 0.5) + two.denoiser(x, 0.5)) / 2)
        assert not torch.allclose(one.denoiser(x, 0.5), two.denoiser(x, 0.5))  # the seeds made different models
    # a run of other data (its codec standardizes by other means): refused
    shutil.copytree(tmp_path / "r2", tmp_path / "other")
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["codec"]["mean"] = [v + 1 for v in cfg["codec"]["mean"]]
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DiffusekitError, match="same data"):
        load_ensemble([tmp_path / "r1", tmp_path / "other"])
    one_line_error(capsys, cli("anomaly", "fit", "--data", tmp_path / "a.csv", "--out", tmp_path / "det", "--run",
                               tmp_path / "r1", "--run", tmp_path / "other"), "same data")
    one_line_error(capsys, cli("anomaly", "fit", "--data", tmp_path / "a.csv", "--out", tmp_path / "det", "--run",
                               tmp_path / "r1", "--run", tmp_path / "r1"), "one run twice")
    # an ensemble of earlier runs: listed (absolute) under "runs" only, and loads as their mean
    assert cli("anomaly", "fit", "--data", tmp_path / "a.csv", "--out", tmp_path / "det", "--run", tmp_path / "r1",
               "--run", tmp_path / "r2", "--no-progress") == 0
    info = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert info["runs"] == [str((tmp_path / r).resolve()) for r in ("r1", "r2")] and "run" not in info
    from diffusekit.detector import AnomalyDetector as Detector

    with torch.no_grad():
        assert torch.allclose(Detector.load(tmp_path / "det").run.denoiser(x, 0.5), ens.denoiser(x, 0.5))


def test_profile_bins_keep_ten_fit_samples_per_dimension():
    """With 20 fit rows an 8-level profile is averaged into 2 bins; on profiles like the real ones (levels moving
    together, each with its own draw noise) the binned Gaussian ranks new anomalies better than the 8-D one."""
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics import roc_auc_score

    from diffusekit.anomaly import _mahalanobis, binned_profile, component_scores, fit_stats, profile_bins

    assert [profile_bins(n, 8) for n in (5, 20, 37, 80, 170, 1000)] == [2, 2, 3, 8, 8, 8]
    prof = torch.arange(8.0).repeat(2, 1)
    assert torch.equal(binned_profile(prof, {"profile_bins": 3}), torch.tensor([[1.0, 4.0, 6.5]] * 2, dtype=torch.float64))
    assert torch.equal(binned_profile(prof, {"profile_bins": 8}), prof.double())

    def profiles(n, shift, g):
        common = torch.randn(n, 1, generator=g, dtype=torch.float64) + shift
        return common + 0.5 * torch.randn(n, 8, generator=g, dtype=torch.float64)

    gains = []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        fit = profiles(20, 0.0, g)
        raw = {"profile": fit, "reconstruction": fit[:, 0], "likelihood": fit[:, 1], "per_dim": fit[:, :2]}
        stats = fit_stats(raw)
        assert stats["profile_bins"] == 2 and len(stats["profile_mean"]) == 2
        test = torch.cat([profiles(300, 0.0, g), profiles(300, 2.5, g)])
        y = np.r_[np.zeros(300), np.ones(300)]
        binned = component_scores({"profile": test, "reconstruction": test[:, 0], "likelihood": test[:, 1]}, stats)
        lw = LedoitWolf().fit(fit.numpy())
        full = _mahalanobis(test, lw.location_, lw.precision_)
        gains.append(roc_auc_score(y, binned["profile"].numpy()) - roc_auc_score(y, full.numpy()))
    assert np.mean(gains) > 0.02, gains


def test_one_sided_profile_counts_only_errors_above_normal():
    """A table's profile distance ignores levels where the error is below the normal mean (rows the model knows by
    heart); above the mean in every level it is the Gaussian's Mahalanobis distance."""
    from diffusekit.anomaly import _mahalanobis, component_scores, fit_stats

    g = torch.Generator().manual_seed(0)
    fit = torch.randn(200, 8, generator=g, dtype=torch.float64) + torch.randn(200, 1, generator=g, dtype=torch.float64)
    raw = {"profile": fit, "reconstruction": fit[:, 0], "likelihood": fit[:, 1], "per_dim": fit[:, :2]}
    one, two = fit_stats(raw, profile_one_sided=True), fit_stats(raw)
    assert one["profile_one_sided"] and not two["profile_one_sided"]
    # the out-of-fold distances are one-sided too (smaller median), but their scale is the two-sided one: over half
    # the fit rows below the mean would make the one-sided MAD 0
    assert one["median"]["profile"] < two["median"]["profile"] and one["mad"]["profile"] == two["mad"]["profile"]
    shift = torch.where(torch.arange(200) % 5 < 3, -1.0, 1.5).double()[:, None]  # 60% of the rows below the mean
    low = fit_stats({**raw, "profile": 0.1 * fit + shift}, profile_one_sided=True)
    assert low["median"]["profile"] == 0 and low["mad"]["profile"] > 0.1, (low["median"], low["mad"])
    mean, prec = torch.tensor(one["profile_mean"]), torch.tensor(one["profile_precision"])
    below, above = mean - torch.rand(5, 8, generator=g) - 0.1, mean + torch.rand(5, 8, generator=g) + 0.1
    assert torch.equal(_mahalanobis(below, mean, prec, one_sided=True), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(_mahalanobis(above, mean, prec, one_sided=True), _mahalanobis(above, mean, prec))
    test = {"profile": torch.cat([below, above]), "reconstruction": torch.zeros(10), "likelihood": torch.zeros(10)}
    s1, s2 = component_scores(test, one)["profile"], component_scores(test, two)["profile"]
    assert (s1[:5] == 0).all() and (s2[:5] > 0.5).all() and torch.allclose(s1[5:], s2[5:])


def test_equal_weights_for_tables_resist_an_uninformative_independent_score():
    """Three scores that follow one normal factor (and move together on anomalies) and one that is noise, independent
    of them: the least-variance weights give the noise the largest weight (independent, it lowers the variance most),
    and their combination separates worse than the plain mean of the z-scores (`weights="equal"`, tables)."""
    from sklearn.metrics import roc_auc_score

    from diffusekit.anomaly import combine, fit_stats

    g = torch.Generator().manual_seed(0)

    def rows(n, shift):
        common = torch.randn(n, generator=g, dtype=torch.float64) + shift
        noisy = lambda: common + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)  # noqa: E731
        prof = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return {"profile": prof, "reconstruction": noisy(), "likelihood": noisy(), "neighbours": noisy(),
                "input_neighbours": torch.randn(n, generator=g, dtype=torch.float64), "per_dim": prof}

    fit = rows(200, 0.0)
    test = {k: torch.cat([a, b]) for (k, a), b in zip(rows(500, 0.0).items(), rows(500, 2.0).values())}
    y = np.r_[np.zeros(500), np.ones(500)]
    least, equal = fit_stats(fit), fit_stats(fit, weights="equal")
    assert max(least["weights"], key=least["weights"].get) in ("input_neighbours", "profile"), least["weights"]
    assert set(equal["weights"].values()) == {0.2}, equal["weights"]
    auroc = {name: roc_auc_score(y, combine(test, stats)[0].numpy()) for name, stats in
             (("least", least), ("equal", equal))}
    assert auroc["equal"] > auroc["least"] + 0.02, auroc


def test_a_csv_is_scored_in_chunks_as_the_whole_file_and_an_interrupted_run_resumes(toy_detector, tmp_path, capsys,
                                                                                     monkeypatch):
    d = toy_detector
    rows = np.concatenate([gmm8_points(1200, 11), np.full((30, 2), 9.0)])
    write_csv(tmp_path / "big.csv", rows, ["a", "b"])
    det = AnomalyDetector.load(d / "det")
    whole = det.score(tmp_path / "big.csv", fpr=0.05)
    s = det.score_csv(tmp_path / "big.csv", tmp_path / "s.csv", fpr=0.05, chunk_rows=500)
    got = pd.read_csv(tmp_path / "s.csv")
    # the same noise draws per row whatever the chunk: the scores are those of the whole file
    assert np.allclose(got["score"], whole["score"], rtol=1e-5, atol=1e-5)  # the file's 6 significant digits
    assert (got["index"] == np.arange(len(rows))).all()
    assert s["n"] == len(rows) and s["flagged"] == int(whole["flag"].sum()) == int(got["flag_at_fpr_0.05"].sum())
    assert not (tmp_path / "s.csv.partial").exists()
    # interrupted after two chunks: the rows scored so far are kept, the scores file is not written
    score = AnomalyDetector.score
    monkeypatch.setattr(AnomalyDetector, "score", interrupted(score, 3))
    with pytest.raises(KeyboardInterrupt):
        det.score_csv(tmp_path / "big.csv", tmp_path / "r.csv", fpr=0.05, chunk_rows=500)
    monkeypatch.setattr(AnomalyDetector, "score", score)
    partial = tmp_path / "r.csv.partial"
    assert not (tmp_path / "r.csv").exists() and len(pd.read_csv(partial)) == 1000
    with open(partial, "a") as f:
        f.write("1000,0.12")  # a row cut short by a kill: scored again
    e(capsys, cli("anomaly", "score", d / "det", "--data", tmp_path / "big.csv", "--out", tmp_path / "r.csv",
                  "--fpr", 0.05), "interrupted run", "--resume")
    e(capsys, cli("anomaly", "score", d / "det", "--data", tmp_path / "big.csv", "--out", tmp_path / "r.csv",
                  "--fpr", 0.1, "--resume"), "another --fpr", "flag_at_fpr_0.05")
    assert cli("anomaly", "score", d / "det", "--data", tmp_path / "big.csv", "--out", tmp_path / "r.csv",
               "--fpr", 0.05, "--resume", "--no-progress") == 0
    assert f"scored {len(rows)} samples" in capsys.readouterr().out
    assert (tmp_path / "r.csv").read_text() == (tmp_path / "s.csv").read_text()
    e(capsys, cli("anomaly", "score", d / "det", "--data", tmp_path / "big.csv", "--out", tmp_path / "r.csv",
                  "--resume"), "nothing to --resume")


HEAP_PROBE = """
import ctypes, sys
from diffusekit import runtime
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.free(libc.malloc(16 << 20))  # a freed mapped 16 MiB block: glibc's threshold for mapping blocks rises to it
if sys.argv[1] == "steady":
    runtime.steady_heap()
libc.malloc_trim(0)  # no free room left in the heap that could serve the block
block = libc.malloc(8 << 20)
heap = next(line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
lo, hi = (int(v, 16) for v in heap.split("-"))
print(not lo <= block < hi)
"""


@pytest.mark.skipif(not (sys.platform == "linux" and hasattr(ctypes.CDLL(None), "mallopt")),
                    reason="glibc's heap only")
def test_a_stream_keeps_large_blocks_out_of_the_heap(monkeypatch):
    """A block of a chunk's size freed back to the system, not left in the heap to fragment: glibc's threshold for
    mapping a block on its own rises with the largest it has freed unless `steady_heap` fixes it, as streams do."""
    mapped = {how: subprocess.run([sys.executable, "-c", HEAP_PROBE, how], capture_output=True, text=True,
                                  check=True).stdout.strip() for how in ("default", "steady")}
    assert mapped == {"default": "False", "steady": "True"}, mapped
    calls = []
    monkeypatch.setattr(checkpoint, "steady_heap", lambda: calls.append(1))
    checkpoint.PartialCsv(None, False)  # every stream's writer
    assert calls == [1]


@pytest.mark.slow
def test_anomaly_score_under_torchrun_matches_one_process(toy_detector, tmp_path):
    d = toy_detector
    write_csv(tmp_path / "rows.csv", np.concatenate([gmm8_points(300, 12), np.full((5, 2), 9.0)]), ["a", "b"])
    args = ["anomaly", "score", str(d / "det"), "--data", str(tmp_path / "rows.csv"), "--fpr", "0.05", "--no-progress"]
    assert cli(*args, "--out", tmp_path / "one.csv") == 0
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "diffusekit", *args, "--out", str(tmp_path / "two.csv")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("scored 305 samples") == 1  # rank 0 alone writes and prints
    one, two = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    assert list(one.columns) == list(two.columns) and (one["index"] == two["index"]).all()
    # each row's noise draws are its own: sharded rows score as in one process (up to batched rounding)
    np.testing.assert_allclose(one["score"], two["score"], rtol=1e-4, atol=1e-4)
    assert (one["flag_at_fpr_0.05"] == two["flag_at_fpr_0.05"]).all() and one["flag_at_fpr_0.05"].sum() >= 5
