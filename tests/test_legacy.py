"""Runs and detector folders written by release 0.1.0 (tests/data/legacy, made with its CLI: see README there) still
load and give the same samples, likelihoods and scores."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import diffusekit as dk

LEGACY = Path(__file__).parent / "data" / "legacy"


def test_legacy_run_samples_the_same():
    run = dk.load(LEGACY / "run")
    with np.load(LEGACY / "samples.npz") as f:
        want, labels = f["arr_0"], f["arr_1"]
    got, got_labels = run.sample(8, seed=0, return_labels=True)
    assert np.array_equal(got_labels, labels)
    assert np.abs(got.astype(int) - want).max() <= 1
    with np.load(LEGACY / "guided.npz") as f:
        want = f["arr_0"]
    got = run.sample(4, seed=0, label=3, guidance=2.0)
    assert np.abs(got.astype(int) - want).max() <= 1


def test_legacy_run_likelihood_the_same():
    want = json.loads((LEGACY / "nll.json").read_text())["exact"]
    got = dk.load(LEGACY / "run").nll("digits", n=4)
    assert got.bits_per_dim.mean() == pytest.approx(want["bits_per_dim"], rel=1e-4)


def test_legacy_detector_scores_the_same():
    det = dk.AnomalyDetector.load(LEGACY / "det")
    with open(LEGACY / "scores.csv") as f:
        want = list(csv.DictReader(f))
    got = det.score(LEGACY / "incoming.csv", fpr=0.1)
    assert np.allclose(got["score"], [float(r["score"]) for r in want], rtol=1e-4, atol=1e-5)
    assert np.allclose(got["p_value"], [float(r["p_value"]) for r in want], rtol=1e-5)
    assert list(got["top_columns"]) == [r["top_columns"] for r in want]
    assert list(got["unseen_categories"].fillna("")) == [r["unseen_categories"] for r in want]
