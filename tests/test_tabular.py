"""The synthetic-table measures (tabular.py) on cases whose answer is known: a fresh sample of the true distribution,
copies of the training rows, and rows whose columns were shuffled apart."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from diffusekit.tabular import ks_statistic, table_report, total_variation
from test_cli import cli, one_line_error


def table(n, seed):
    """x decides the class y (logistic); z is x plus noise; a categorical colour depends on z; some z missing."""
    g = np.random.default_rng(seed)
    x = g.normal(size=n)
    y = (g.random(n) < 1 / (1 + np.exp(-3 * x))).astype(int)
    z = np.round(x + 0.5 * g.normal(size=n), 3)
    colour = np.where(z > 0.5, "red", np.where(g.random(n) < 0.5, "blue", "green"))
    z = np.where(g.random(n) < 0.1, np.nan, z)
    return pd.DataFrame({"x": np.round(x, 6), "z": z, "colour": colour, "y": y.astype(str)})


def test_ks_and_total_variation_against_references():
    g = np.random.default_rng(0)
    a, b = g.normal(size=500), g.normal(0.3, 1.2, size=700)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_statistic(a, a) == 0.0
    assert total_variation(np.array(["a", "a", "b", "b"]), np.array(["a", "c", "c", "c"])) == pytest.approx(0.75)
    pairs = np.array([["a", "1"], ["a", "2"]])
    assert total_variation(pairs, pairs[::-1]) == 0.0 and total_variation(pairs, pairs[[0, 0]]) == pytest.approx(0.5)


def test_fresh_copied_and_shuffled_rows(tmp_path):
    real, hold, fresh = table(3000, 0), table(3000, 1), table(3000, 2)
    good = table_report(fresh, real, holdout=hold, target="y")
    assert good["column_shape_error"] < 0.04 and good["pair_trend_error"] < 0.04, good
    assert 0.4 < good["detection_auroc"] < 0.6, good
    assert 0.45 < good["dcr_share_closer_to_training"] < 0.55 and good["exact_copies_of_training"] == 0, good
    ml = good["ml_efficiency"]
    assert ml["measure"] == "auroc" and ml["real"] > 0.8 and abs(ml["gap"]) < 0.02, ml
    copied = table_report(real, real, holdout=hold)
    assert copied["dcr_share_closer_to_training"] == 1.0 and copied["exact_copies_share"] == 1.0
    assert copied["column_shape_error"] == 0.0 and copied["pair_trend_error"] == 0.0
    g = np.random.default_rng(3)
    shuffled = fresh.apply(lambda col: col.to_numpy()[g.permutation(len(col))])  # right marginals, no dependence
    bad = table_report(shuffled, real, holdout=hold, target="y")
    assert bad["column_shape_error"] < 0.04 and bad["pair_trend_error"] > 0.1, bad
    assert bad["detection_auroc"] > 0.75 and bad["ml_efficiency"]["synthetic"] < 0.6, bad
    # the command line: the same figures in the JSON
    for name, frame in (("real", real), ("hold", hold), ("fresh", fresh)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    assert cli("evaluate", tmp_path / "fresh.csv", "--reference", tmp_path / "real.csv", "--holdout",
               tmp_path / "hold.csv", "--target", "y", "--json", tmp_path / "e.json") == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["ml_efficiency"]["synthetic"] == pytest.approx(ml["synthetic"]) and "energy_distance" in ev


def test_table_report_errors(tmp_path, capsys):
    real = table(200, 0)
    real.to_csv(tmp_path / "real.csv", index=False)
    e = one_line_error
    e(capsys, cli("evaluate", tmp_path / "real.csv", "--reference", tmp_path / "real.csv", "--target", "y"),
      "--holdout")
    e(capsys, cli("evaluate", tmp_path / "real.csv", "--reference", tmp_path / "real.csv", "--holdout",
                  tmp_path / "real.csv", "--target", "nope"), "no column 'nope'")
    images = tmp_path / "digits.npz"
    np.savez(images, np.zeros((8, 8, 8, 1), np.uint8))
    e(capsys, cli("evaluate", images, "--reference", "digits", "--holdout", tmp_path / "real.csv"),
      "--holdout and --target are for tables")
    real.drop(columns="z").to_csv(tmp_path / "fewer.csv", index=False)
    e(capsys, cli("evaluate", tmp_path / "fewer.csv", "--reference", tmp_path / "real.csv"), "rows of 4 values")
