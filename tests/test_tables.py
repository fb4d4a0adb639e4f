"""Tables with categorical columns: the codec, CSV reading, train -> sample -> evaluate, and anomaly detection with
categories never seen in the normal data."""
import csv
import importlib
import json

import numpy as np
import pytest
import torch

from diffusekit.data import load_data
from diffusekit.data.codecs import VectorCodec, codec_from_dict
from diffusekit.errors import DiffusekitError
from test_cli import cli, interrupted, one_line_error

MEANS = {"red": 0.0, "blue": 3.0, "green": -3.0}


def mixed_rows(n, seed):
    """colour decides x's mean; y follows x: a table whose columns depend on each other."""
    g = np.random.default_rng(seed)
    colour = g.choice(list(MEANS), n, p=[0.5, 0.3, 0.2])
    x = np.array([MEANS[c] for c in colour]) + 0.3 * g.normal(size=n)
    y = x + 0.3 * g.normal(size=n)
    return [[f"{a:.4f}", c, f"{b:.4f}"] for a, c, b in zip(x, colour, y)]


def write(path, rows, header=("x", "colour", "y")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_codec_round_trip_and_unseen_levels(tmp_path):
    d = load_data(str(write(tmp_path / "t.csv", mixed_rows(200, 0))))
    c = d.codec
    assert c.categories == {"colour": ["blue", "green", "red"]} and c.shape == (5,) and d.x.shape == (200, 5)
    block = d.x[:, 1:4]
    assert set(block.unique().tolist()) == {-1.0, 1.0} and (block.sum(1) == -1).all()  # one +1 per row
    back = c.decode(d.x)
    assert back.dtype == object and set(back[:, 1]) == {"red", "blue", "green"}
    assert torch.allclose(c.encode(back), d.x, atol=1e-5)
    c2 = codec_from_dict(json.loads(json.dumps(c.to_dict())))
    assert torch.allclose(c2.encode(back), d.x, atol=1e-5)
    assert c.log_det_scale() == pytest.approx(-np.log(c.std[[0, 2]]).sum())  # one-hot dimensions have no units
    rows = np.array([[0.0, "purple", 1.0], [0.0, "red", 1.0]], dtype=object)
    with pytest.raises(DiffusekitError, match="category 'purple'.*not in the training data"):
        c.encode(rows)
    unseen = []
    x = c.encode(rows, unseen=unseen)
    assert unseen == [(0, "colour", "purple")] and (x[0, 1:4] == -1).all() and x[1, 3] == 1
    # a level that looks like a number is found from the number
    nc = VectorCodec.fit(np.array([["1", "a"], ["2", "b"], ["2", "a"]], dtype=object), ["n", "k"])
    assert nc.categories == {"k": ["a", "b"]} and nc.numeric == [True, False] and VectorCodec.fit(np.array([["1", "a"], ["b", "2"]], dtype=object)).categories == \
        {"x0": ["1", "b"], "x1": ["2", "a"]}
    lvl = VectorCodec([0.0], [1.0], ["k"], {"k": ["3", "x"]})
    assert lvl.encode(np.array([[3.0], ["x"]], dtype=object)).tolist() == [[1.0, -1.0], [-1.0, 1.0]]


def test_large_values_keep_their_spread_through_decode_and_a_samples_csv(tmp_path):
    """A column far from 0 relative to its spread (a unix time): float32 user values (7 digits) or a 6-digit CSV would
    make it constant; the detector and `encode` re-encode decoded rows, and `anomaly fit` trains on such a CSV."""
    import pandas as pd

    from diffusekit.checkpoint import save_samples

    g = np.random.default_rng(0)
    t = np.stack([1.7e9 + 10 * g.normal(size=200), 1234567.89 + g.normal(size=200)], 1)
    c = VectorCodec.fit(t, ["time", "amount"])
    x = c.encode(t)
    assert torch.allclose(c.encode(c.decode(x)), x, atol=1e-4)
    save_samples(str(tmp_path / "s.csv"), pd.DataFrame(c.decode(x), columns=c.columns))
    with open(tmp_path / "s.csv") as f:
        got = np.array([[float(v) for v in row] for row in list(csv.reader(f))[1:]])
    assert np.array_equal(got, c.decode(x))  # the CSV reads back to the very numbers written


def test_new_rows_are_typed_by_the_model_not_by_their_own_cells(tmp_path):
    """A categorical column with a number-like level: a batch of new rows that is mostly that level reads as a
    category when the model says so (it would otherwise be refused as a numeric column with a typo)."""
    rows = [["7", "1.0"], ["7", "2.0"], ["A", "3.0"], ["7", "4.0"]]
    write(tmp_path / "new.csv", rows, ("k", "v"))
    with pytest.raises(DiffusekitError, match="non-numeric cell 'A' in numeric column 'k'"):
        load_data(str(tmp_path / "new.csv"))
    d = load_data(str(tmp_path / "new.csv"), categorical={"k"})
    model = VectorCodec([0.0, 2.5], [1.0, 1.0], ["k", "v"], {"k": ["7", "A", "B"]})
    x = model.encode(d.codec.decode(d.x))
    assert x[:, :3].tolist() == [[1, -1, -1], [1, -1, -1], [-1, 1, -1], [1, -1, -1]]
    # a batch holding only number-like levels: read as numbers, "1" came back from the float32 model space as
    # 0.99999996, a level the model never saw, and every row was an anomaly
    rows = [["1", "1.0"], ["2", "2.0"], ["3", "3.0"], ["1", "4.0"]]
    write(tmp_path / "num.csv", rows, ("k", "v"))
    d = load_data(str(tmp_path / "num.csv"), categorical={"k"})
    unseen = []
    model = VectorCodec([0.0, 2.5], [1.0, 1.0], ["k", "v"], {"k": ["1", "2", "3", "X"]})
    x = model.encode(d.codec.decode(d.x), unseen=unseen)
    assert unseen == [] and x[:, :4].tolist() == [[1, -1, -1, -1], [-1, 1, -1, -1], [-1, -1, 1, -1], [1, -1, -1, -1]]


def test_csv_errors(tmp_path, capsys):
    rows = mixed_rows(300, 1)
    dup = write(tmp_path / "dup.csv", rows, ("x", "colour", "x"))
    one_line_error(capsys, cli("train", "--data", dup, "--out", tmp_path / "r", "--steps", 1), "duplicated column name 'x'")
    typo = [r[:] for r in rows]
    typo[5][0] = "1.2.3"
    e = one_line_error
    e(capsys, cli("train", "--data", write(tmp_path / "typo.csv", typo), "--out", tmp_path / "r", "--steps", 1),
      "non-numeric cell '1.2.3'", "column 'x'", "row 7")
    ids = [r + [f"id{i}"] for i, r in enumerate(rows)]
    e(capsys, cli("train", "--data", write(tmp_path / "ids.csv", ids, ("x", "colour", "y", "id")), "--out", tmp_path / "r",
                  "--steps", 1), "identifier", "'id'")
    empty = [r[:2] + [""] for r in rows]
    e(capsys, cli("train", "--data", write(tmp_path / "empty.csv", empty), "--out", tmp_path / "r", "--steps", 1),
      "column 'y' has no values")
    e(capsys, cli("train", "--data", write(tmp_path / "ok.csv", rows), "--out", tmp_path / "r", "--steps", 1,
                  "--target", "nope"), "no column 'nope'")
    e(capsys, cli("train", "--data", "digits", "--out", tmp_path / "r", "--steps", 1, "--target", "x"),
      "target is a column of a table")
    e(capsys, cli("train", "--data", tmp_path / "ok.csv", "--out", tmp_path / "r", "--steps", 1, "--target", "colour",
                  "--class-cond", "off"), "--class-cond auto or on")
    write(tmp_path / "one.csv", [[r[1]] for r in rows], ("colour",))
    e(capsys, cli("train", "--data", tmp_path / "one.csv", "--out", tmp_path / "r", "--steps", 1, "--target",
                  "colour"), "only column")
    assert not (tmp_path / "r").exists()


def typed_rows(n, seed):
    """A table with every column type: an integer count, a bounded share, an ISO date, a date-time, a numeric column
    with missing cells (20%), a categorical with missing cells, and a 100-level categorical (analog bits)."""
    g = np.random.default_rng(seed)
    count = g.poisson(3, n)
    share = np.clip(g.beta(2, 5, n), 0, 1)
    day = np.datetime64("2024-01-01") + g.integers(0, 366, n).astype("timedelta64[D]")
    stamp = np.datetime64("2024-03-01T00:00:00") + g.integers(0, 86400 * 30, n).astype("timedelta64[s]")
    amount = np.where(g.random(n) < 0.2, np.nan, np.round(100 + 10 * count + g.normal(size=n), 2))
    colour = np.where(g.random(n) < 0.1, "", g.choice(["red", "blue"], n))
    shop = g.integers(0, 100, n)
    return [[str(c), f"{s:.4f}", str(d), str(t).replace("T", " "), "NA" if np.isnan(a) else f"{a:.2f}", k, f"shop{h}"]
            for c, s, d, t, a, k, h in zip(count, share, day, stamp, amount, colour, shop)]


TYPED = ("count", "share", "day", "stamp", "amount", "colour", "shop")


def test_every_column_type_round_trips_through_the_codec_and_a_csv(tmp_path):
    import pandas as pd

    from diffusekit.checkpoint import save_samples
    from diffusekit.data.codecs import ONE_HOT_MAX

    rows = typed_rows(400, 0)
    d = load_data(str(write(tmp_path / "t.csv", rows, TYPED)))
    c = d.codec
    assert c.decimals == {"count": 0, "share": 4, "day": 0, "stamp": 0, "amount": 2}
    assert c.missing == {"amount"} and c.bits == {"shop"}
    assert c.dates == {"day": {"unit": "D", "sep": "T"}, "stamp": {"unit": "s", "sep": " "}}
    assert "" in c.categories["colour"] and len(c.categories["shop"]) > ONE_HOT_MAX
    assert c.slices[4].stop - c.slices[4].start == 2 and c.slices[6].stop - c.slices[6].start == 7  # 100 levels: 7 bits
    save_samples(str(tmp_path / "back.csv"), pd.DataFrame(c.decode(d.x), columns=c.columns))
    with open(tmp_path / "back.csv") as f:
        back = list(csv.reader(f))[1:]
    want = [[v if v != "NA" else "" for v in r] for r in rows]
    for j, name in enumerate(TYPED):  # every cell as written: numbers keep their decimals (not float32 noise)
        assert [r[j] for r in back] == [r[j].rstrip("0").rstrip(".") if name in ("share", "amount") else r[j]
                                        for r in want], name
    c2 = codec_from_dict(json.loads(json.dumps(c.to_dict())))  # as a run saves it
    assert torch.equal(c2.encode(c.decode(d.x)), c.encode(c.decode(d.x)))
    # decoding model-space values anywhere: integers round, every number stays in its training range, a missing
    # indicator above 0 is a missing cell, and analog bits that spell no level take the nearest level
    x = d.x[:4].clone()
    x[0, c.slices[0]] = 1e3
    x[1, c.slices[0]] = -1e3
    x[2, c.slices[4].start] = 0.5
    x[3, c.slices[6]] = torch.tensor([1.0, 1, 1, 1, 1, 1, 0.5])  # 127: no level; 63 (0.5 away) is the nearest
    out = c.decode(x)
    counts = [int(r[0]) for r in rows]
    assert out[0, 0] == max(counts) and out[1, 0] == min(counts) and np.isnan(out[2, 4])
    assert out[3, 6] == c.categories["shop"][63]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    write(d / "normal.csv", mixed_rows(3000, 2))
    assert cli("train", "--data", d / "normal.csv", "--out", d / "run", "--steps", 1500, "--batch-size", 256,
               "--no-progress") == 0
    return d


def test_train_sample_evaluate(mixed_run, tmp_path, capsys):
    d = mixed_run
    assert cli("sample", d / "run", "--n", 2000, "--out", tmp_path / "s.csv", "--steps", 20, "--no-progress") == 0
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x", "colour", "y"] and {r["colour"] for r in rows} <= set(MEANS)
    for colour, mean in MEANS.items():  # the dependence between columns is learned, not only the marginals
        xs = [float(r["x"]) for r in rows if r["colour"] == colour]
        assert len(xs) > 150 and abs(np.mean(xs) - mean) < 0.5, (colour, len(xs), np.mean(xs))
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "s.csv", "--reference", d / "normal.csv", "--json", tmp_path / "e.json") == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert set(ev["marginal_w1"]) == {"x", "y"} and ev["marginal_tv"]["colour"] < 0.08, ev
    one_line_error(capsys, cli("sample", d / "run", "--n", 5, "--out", tmp_path / "s.npz"), "written as .csv")
    write(tmp_path / "purple.csv", [["0.0", "purple", "0.0"]])  # likelihood has no value for a level never trained on
    one_line_error(capsys, cli("nll", d / "run", "--data", tmp_path / "purple.csv"), "category 'purple'",
                   "not in the training data")
    # new rows are typed by the run: a batch of mostly number-like cells in its categorical column is read as
    # categories (so the unknown level is named), not refused as a numeric column with a typo
    write(tmp_path / "numeric.csv", [["0.0", "red", "0.0"], ["0.0", "1", "0.0"], ["0.0", "2", "0.0"]])
    one_line_error(capsys, cli("nll", d / "run", "--data", tmp_path / "numeric.csv"), "category '1",
                   "not in the training data")


def test_anomaly_with_categories(mixed_run, tmp_path, capsys):
    d = mixed_run
    # 800 of the training rows are enough for the detector's fit and calibration halves (and 4x cheaper than 3,000)
    with open(d / "normal.csv", newline="") as f:
        write(tmp_path / "normal.csv", list(csv.reader(f))[1:801])
    assert cli("anomaly", "fit", "--data", tmp_path / "normal.csv", "--run", d / "run", "--out", tmp_path / "det",
               "--no-progress") == 0
    normal = mixed_rows(300, 3)
    swapped = [[f"{MEANS['blue']:.4f}" if r[1] != "blue" else "0.0", r[1], r[2] if r[1] == "blue" else "3.0"]
               for r in mixed_rows(100, 4)]  # values of another colour: every column alone looks normal
    unseen = [["0.0", "purple", "0.0"]]
    rows = [r + ["0"] for r in normal] + [r + ["1"] for r in swapped] + [r + ["1"] for r in unseen]
    write(tmp_path / "test.csv", rows, ("x", "colour", "y", "bad"))
    assert cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "test.csv", "--label-column", "bad",
               "--out", tmp_path / "rep", "--fpr", 0.05, "--no-progress") == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["auroc"] > 0.95, rep
    write(tmp_path / "score.csv", normal[:20] + unseen)
    capsys.readouterr()
    assert cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "score.csv", "--out", tmp_path / "s.csv",
               "--fpr", 0.05, "--no-progress") == 0
    assert "1 unseen category in 1 rows" in capsys.readouterr().out
    with open(tmp_path / "s.csv") as f:
        out = list(csv.DictReader(f))
    assert out[-1]["unseen_categories"] == "colour=purple" and out[-1]["flag_at_fpr_0.05"] == "1"
    assert all(r["unseen_categories"] == "" for r in out[:-1])
    assert out[-1]["top_columns"].split()[0] in ("x", "colour", "y")
    one_line_error(capsys, cli("anomaly", "report", tmp_path / "det", "--data", tmp_path / "test.csv", "--label-column",
                               "colour", "--out", tmp_path / "r2"), "holds text")
    write(tmp_path / "text.csv", [["low", r[1], r[2]] for r in normal[:5]])  # text where the model has numbers
    one_line_error(capsys, cli("anomaly", "score", tmp_path / "det", "--data", tmp_path / "text.csv", "--out",
                               tmp_path / "t.csv", "--fpr", 0.05), "column 'x' is numeric")
    info = json.loads((tmp_path / "det" / "detector.json").read_text())
    del info["stats"]["weights"]  # as an older diffusekit wrote it
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "detector.json").write_text(json.dumps(info))
    one_line_error(capsys, cli("anomaly", "score", tmp_path / "old", "--data", tmp_path / "score.csv", "--out",
                               tmp_path / "t.csv", "--fpr", 0.05), "fit it again")
    assert not (tmp_path / "t.csv").exists()


def test_every_column_type_trains_and_samples_back_in_kind(tmp_path, capsys):
    """train -> sample on a CSV with every column type: integers come back as integers, numbers within their
    training range with their decimals, dates and date-times as such, missing cells at about the learned rate."""
    write(tmp_path / "typed.csv", typed_rows(2000, 1), TYPED)
    assert cli("train", "--data", tmp_path / "typed.csv", "--out", tmp_path / "run", "--steps", 600,
               "--batch-size", 256, "--no-progress") == 0
    assert cli("sample", tmp_path / "run", "--n", 1000, "--out", tmp_path / "s.csv", "--no-progress") == 0
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(TYPED) and len(rows) == 1000
    counts = [int(r["count"]) for r in rows]  # int() fails on "3.0": integers are written as integers
    assert 0 <= min(counts) and max(counts) <= max(int(r[0]) for r in typed_rows(2000, 1))
    assert all(0 <= float(r["share"]) <= 1 and len(r["share"].split(".")[-1]) <= 4 for r in rows)
    days = np.array([r["day"] for r in rows], dtype="datetime64[D]")
    assert days.min() >= np.datetime64("2024-01-01") and days.max() <= np.datetime64("2024-12-31")
    assert all(len(r["stamp"]) == 19 and r["stamp"][10] == " " for r in rows)
    gone = np.mean([r["amount"] == "" for r in rows])
    assert 0.1 < gone < 0.3, gone  # 20% missing in the training rows
    assert {r["colour"] for r in rows} <= {"red", "blue", ""} and {r["shop"] for r in rows} <= \
        {f"shop{i}" for i in range(100)}
    # the sampled file reads back as data of the same kinds (what `nll`, `anomaly score` and `evaluate` do)
    capsys.readouterr()
    assert cli("nll", tmp_path / "run", "--data", tmp_path / "s.csv", "--n", 50, "--no-progress") == 0


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("target")
    write(d / "normal.csv", mixed_rows(3000, 5))
    assert cli("train", "--data", d / "normal.csv", "--out", d / "run", "--steps", 800, "--batch-size", 256,
               "--target", "colour", "--no-progress") == 0
    return d


def test_target_column_draws_rows_of_one_class(target_run, tmp_path, capsys):
    d = target_run
    cfg = json.loads((d / "run" / "config.json").read_text())
    assert cfg["model"]["num_classes"] == 3 and cfg["codec"]["target"]["column"] == "colour"
    assert cli("sample", d / "run", "--n", 1000, "--out", tmp_path / "all.csv", "--no-progress") == 0
    with open(tmp_path / "all.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x", "colour", "y"]  # the target column in its place
    share = {c: np.mean([r["colour"] == c for r in rows]) for c in MEANS}
    assert abs(share["red"] - 0.5) < 0.06 and abs(share["green"] - 0.2) < 0.06, share  # the training proportions
    assert cli("sample", d / "run", "--n", 1000, "--where", "colour=green", "--out", tmp_path / "green.csv",
               "--no-progress") == 0
    with open(tmp_path / "green.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["colour"] for r in rows} == {"green"}
    assert abs(np.mean([float(r["x"]) for r in rows]) - MEANS["green"]) < 0.3
    e = one_line_error
    e(capsys, cli("sample", d / "run", "--n", 5, "--where", "colour=purple", "--out", tmp_path / "p.csv"),
      "never had the value 'purple'", "green")
    e(capsys, cli("sample", d / "run", "--n", 5, "--where", "x=1", "--out", tmp_path / "p.csv"),
      "target column 'colour'")
    e(capsys, cli("sample", d / "run", "--n", 5, "--where", "colour", "--out", tmp_path / "p.csv"), "COLUMN=VALUE")
    # rows with the target column are scored given their class; a class the run never had is named
    capsys.readouterr()
    assert cli("nll", d / "run", "--data", tmp_path / "green.csv", "--n", 20, "--no-progress") == 0
    write(tmp_path / "purple.csv", [["0.0", "purple", "0.0"]])
    e(capsys, cli("nll", d / "run", "--data", tmp_path / "purple.csv"), "class 'purple'")
    assert not (tmp_path / "p.csv").exists()


def test_rows_are_written_as_they_are_drawn_and_an_interrupted_run_resumes(target_run, tmp_path, capsys,
                                                                           monkeypatch):
    from diffusekit import samplers
    from diffusekit.checkpoint import save_samples
    from diffusekit.run import load

    run = load(target_run / "run")
    save_samples(tmp_path / "whole.csv", run.sample(230, seed=4))  # at once
    run.sample_csv(230, tmp_path / "parts.csv", seed=4, chunk_rows=100)
    # row i from its own seed, the target classes drawn once: the file is the one written at once
    assert (tmp_path / "parts.csv").read_text() == (tmp_path / "whole.csv").read_text()
    draw = samplers.sample
    monkeypatch.setattr("diffusekit.run.sample", interrupted(draw, 3))
    with pytest.raises(KeyboardInterrupt):
        run.sample_csv(230, tmp_path / "r.csv", seed=4, chunk_rows=100)
    monkeypatch.setattr("diffusekit.run.sample", draw)
    assert not (tmp_path / "r.csv").exists()
    assert len((tmp_path / "r.csv.partial").read_text().splitlines()) == 201
    args = ["sample", target_run / "run", "--n", 230, "--seed", 4, "--out", tmp_path / "r.csv", "--no-progress"]
    one_line_error(capsys, cli(*args), "interrupted run", "--resume")
    one_line_error(capsys, cli(*args[:-1], "--steps", 7, "--resume"), "other settings", "--steps")
    assert cli(*args, "--resume") == 0 and "wrote 230 samples" in capsys.readouterr().out
    assert (tmp_path / "r.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert not (tmp_path / "r.csv.partial").exists() and not (tmp_path / "r.csv.partial.json").exists()
    one_line_error(capsys, cli(*args, "--grid", tmp_path / "g.png", "--resume"), "--resume", "drawn at once")


def test_a_table_keeps_rows_out_and_samples_where_their_loss_is_lowest(tmp_path, monkeypatch):
    """A table read from a CSV keeps a tenth of its rows out of training; the EMA model's loss on them is logged, the
    weights where it is lowest are kept in best/ (which sampling takes by default), and training stops once it has not
    improved for as many steps as it took to reach it."""
    import diffusekit as dk

    tr = importlib.import_module("diffusekit.train")  # the package's `train` is the function
    write(tmp_path / "t.csv", mixed_rows(400, 3))
    t = tr.Trainer(tr.TrainConfig(data=str(tmp_path / "t.csv"), out=str(tmp_path / "probe"), steps=1), progress=False)
    assert len(t.data) == 360 and len(t.held_out[0]) % 40 == 0 and t.cfg.eval_every == tr.HOLDOUT_EVERY
    # the real loss falls while the model learns
    dk.train(str(tmp_path / "t.csv"), tmp_path / "real", steps=300, eval_every=100, progress=False)
    losses = [float(r.split(",")[1]) for r in (tmp_path / "real" / "eval.csv").read_text().split()[1:]]
    assert len(losses) == 3 and losses[2] < losses[0], losses
    # a stand-in curve, lowest at step 150: the stop and the weights sampled follow it alone
    monkeypatch.setattr(tr, "HOLDOUT_PATIENCE", 200)
    monkeypatch.setattr(tr.Trainer, "held_out_loss", lambda self: abs(self.step - 150) / 100 + 1.0)
    run = dk.train(str(tmp_path / "t.csv"), tmp_path / "run", steps=2000, eval_every=50, progress=False)
    assert run.weights == ("best", True) and run.step == 150
    assert json.loads((tmp_path / "run" / "last" / "state.json").read_text())["step"] == 350  # 150 + max(200, 150)
    assert dk.load(tmp_path / "run", "last").step == 350
    assert "held out, at step 150 (sampled by default)" in run.describe()
    rows = run.sample(50, seed=0)
    assert rows.shape == (50, 3)


def test_a_held_out_run_resumes_exactly(tmp_path):
    import diffusekit as dk

    write(tmp_path / "t.csv", mixed_rows(300, 4))
    # a finished run extended to more steps decays its learning rate again over the new budget (docs/training.md):
    # step by step as if it had never stopped at a constant rate only
    kw = dict(eval_every=50, lr_decay_frac=0.0, progress=False)
    whole = dk.train(str(tmp_path / "t.csv"), tmp_path / "whole", steps=200, **kw)
    dk.train(str(tmp_path / "t.csv"), tmp_path / "part", steps=100, **kw)
    part = dk.train(None, tmp_path / "part", resume=True, steps=200, progress=False)
    assert whole.step == part.step
    for a, b in zip(whole.denoiser.net.state_dict().values(), part.denoiser.net.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "whole" / "eval.csv").read_text() == (tmp_path / "part" / "eval.csv").read_text()


def test_holdout_defaults_and_errors(tmp_path, capsys):
    tr = importlib.import_module("diffusekit.train")

    write(tmp_path / "small.csv", mixed_rows(150, 5))  # below HOLDOUT_MIN_ROWS: every row trains
    assert cli("train", "--data", tmp_path / "small.csv", "--out", tmp_path / "small", "--steps", 5, "--no-progress") == 0
    assert json.loads((tmp_path / "small" / "config.json").read_text())["train"]["holdout"] == 0
    cfg = tr.TrainConfig(data="toy:gmm8", out="x", steps=1)
    tr.fill_recipe(cfg, "vector", torch.device("cpu"), 20_000)
    assert cfg.holdout == 0 and cfg.eval_every == 0  # arrays and toys: not a user's table
    one_line_error(capsys, cli("train", "--data", "digits", "--out", tmp_path / "d", "--steps", 5, "--holdout", 0.1),
                   "holdout keeps rows of a table")
    one_line_error(capsys, cli("train", "--data", tmp_path / "small.csv", "--out", tmp_path / "s2", "--steps", 5,
                               "--holdout", 0.001), "keeps 0 out")
    one_line_error(capsys, cli("train", "--data", tmp_path / "small.csv", "--out", tmp_path / "s3", "--steps", 5,
                               "--holdout", 1.5), "holdout must be in [0, 1)")
    one_line_error(capsys, cli("train", "--data", tmp_path / "small.csv", "--out", tmp_path / "s4", "--steps", 5,
                               "--holdout", 0.2, "--eval-reference", tmp_path / "small.csv"), "--eval-reference")
    one_line_error(capsys, cli("train", "--data", tmp_path / "small.csv", "--out", tmp_path / "s5", "--steps", 5,
                               "--holdout", 0.2, "--eval-every", 0), "every --eval-every steps")
    assert not (tmp_path / "d").exists() and not (tmp_path / "s2").exists()


def spiky_column(n, seed):
    """Hours a week: 30% exactly 0, 35% exactly 40, the rest spread over 0-80 with one decimal."""
    g = np.random.default_rng(seed)
    kind = g.choice(3, n, p=[0.3, 0.35, 0.35])
    return np.where(kind == 0, 0.0, np.where(kind == 1, 40.0, np.round(g.uniform(0, 80, n), 1)))


def test_the_quantile_map_is_scikit_learns_on_continuous_values():
    from sklearn.preprocessing import QuantileTransformer

    from diffusekit.data.codecs import from_normal, quantile_count, to_normal

    g = np.random.default_rng(0)
    v = g.gamma(2.0, 3.0, 3000)
    c = VectorCodec.fit(v[:, None], numeric="quantile")
    ref = QuantileTransformer(output_distribution="normal", n_quantiles=quantile_count(len(v)),
                              subsample=10**9).fit(v[:, None])
    np.testing.assert_allclose(c.quantiles["x0"], ref.quantiles_[:, 0], rtol=1e-12)
    new = np.r_[g.gamma(2.0, 3.0, 500), -1.0, 1e3]  # beyond the training range at both ends
    np.testing.assert_allclose(to_normal(new, c.quantiles["x0"]), ref.transform(new[:, None])[:, 0], atol=1e-8)
    z = g.uniform(-5, 5, 500)
    np.testing.assert_allclose(from_normal(z, c.quantiles["x0"]), ref.inverse_transform(z[:, None])[:, 0], atol=1e-8)


def test_the_quantile_map_gives_repeated_values_back_exactly_at_their_rates():
    """Analytic: decoding standard normal draws through the quantile map gives each spike its training share, the
    values exactly; the standard map gives a spike's value only where it clips at the range's end."""
    v = spiky_column(30_000, 0)
    c = VectorCodec.fit(v[:, None], numeric="quantile")
    np.testing.assert_array_equal(c.decode(c.encode(v[:, None]))[:, 0], v)  # training values round-trip exactly
    z = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0))
    out = c.decode(z)[:, 0]
    assert abs((out == 0).mean() - 0.3) < 0.01 and abs((out == 40).mean() - 0.35) < 0.01
    standard = VectorCodec.fit(v[:, None]).decode(z)[:, 0]
    assert (standard == 40).mean() < 0.01
    # a spike encodes to the middle of its stretch of the distribution function, not to the +-5.2 bound at an end
    middle = torch.special.ndtri(torch.tensor((v == 0).mean() / 2))
    assert abs(float(c.encode(np.array([[0.0]]))[0, 0]) - float(middle)) < 0.01
    lone = np.r_[np.random.default_rng(1).standard_normal(3000), 1e6, -5e5]  # each end held by one value
    ends = VectorCodec.fit(lone[:, None], numeric="quantile")
    np.testing.assert_array_equal(ends.decode(ends.encode(lone[-2:, None]))[:, 0], lone[-2:])
    back = codec_from_dict(json.loads(json.dumps(c.to_dict())))
    np.testing.assert_array_equal(back.decode(z[:1000])[:, 0], out[:1000])
    two = VectorCodec.fit(np.c_[v, v], columns=["a", "b"], numeric="quantile")
    assert list(two.without("a").quantiles) == ["b"]
    with pytest.raises(DiffusekitError, match="numeric must be one of"):
        VectorCodec.fit(v[:, None], numeric="rank")


def test_a_table_trained_with_the_quantile_map_samples_spikes_and_refuses_likelihoods(tmp_path, capsys):
    v = spiky_column(2000, 1)
    g = np.random.default_rng(1)
    rows = [[f"{h:g}", "yes" if h > 0 else g.choice(["yes", "no"])] for h in v]
    write(tmp_path / "hours.csv", rows, ("hours", "works"))
    assert cli("train", "--data", tmp_path / "hours.csv", "--out", tmp_path / "run", "--steps", 300,
               "--batch-size", 256, "--numeric", "quantile", "--no-progress") == 0
    assert cli("sample", tmp_path / "run", "--n", 1000, "--out", tmp_path / "s.csv", "--no-progress") == 0
    with open(tmp_path / "s.csv") as f:
        hours = np.array([float(r["hours"]) for r in csv.DictReader(f)])
    assert (hours == 40).mean() > 0.2 and (hours == 0).mean() > 0.15, ((hours == 40).mean(), (hours == 0).mean())
    capsys.readouterr()
    code = cli("nll", tmp_path / "run", "--data", tmp_path / "hours.csv", "--n", 10, "--no-progress")
    one_line_error(capsys, code, "numeric standard", "point mass")
    from diffusekit import AnomalyDetector

    with pytest.raises(DiffusekitError, match="numeric standard"):
        AnomalyDetector.fit(str(tmp_path / "hours.csv"), runs=[tmp_path / "run"], out=tmp_path / "det")
    code = cli("train", "--data", tmp_path / "hours.csv", "--out", tmp_path / "ft", "--steps", 1, "--init-from",
               tmp_path / "run")  # its weights work on quantile-mapped columns
    one_line_error(capsys, code, "trained with the other", "numeric quantile")
    code = cli("train", "--data", tmp_path / "hours.csv", "--out", tmp_path / "bad", "--steps", 1, "--numeric", "rank")
    one_line_error(capsys, code, "numeric", "quantile")
    code = cli("train", "--data", "digits", "--out", tmp_path / "img", "--steps", 1, "--numeric", "quantile")
    one_line_error(capsys, code, "table", "images")
    assert not (tmp_path / "img" / "last").exists()
