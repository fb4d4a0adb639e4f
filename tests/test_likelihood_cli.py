"""nll / encode / decode / sample --report through the CLI, on tiny trained runs: outputs, units, torchrun, bad input."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from test_cli import cli, interrupted, one_line_error


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli("train", "--data", "digits", "--out", out, "--preset", "tiny", "--steps", 30, "--batch-size", 64,
               "--no-progress") == 0
    return out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "toy"
    assert cli("train", "--data", "toy:gmm8:512", "--out", out, "--preset", "tiny", "--steps", 30, "--no-progress") == 0
    return out


def test_nll_json_and_csv(digits_run, tmp_path, capsys):
    csv = tmp_path / "nll.csv"
    assert cli("nll", digits_run, "--data", "digits", "--n", 5, "--method", "both", "--json", "--csv", csv,
               "--rtol", 1e-3, "--atol", 1e-3, "--levels", 8) == 0
    r = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert r["n"] == 5 and r["dims"] == 64 and "dequantized" in r["units"]
    for k in ("exact", "elbo"):
        assert set(r[k]) >= {"nll_nats", "nll_nats_se", "bits_per_dim", "bits_per_dim_se"}
        # 8-bit images: the discrete bound is positive and the bits/dim is nats / (d ln 2)
        assert r[k]["bits_per_dim"] > 0 and r[k]["nll_nats_se"] > 0
        assert r[k]["bits_per_dim"] == pytest.approx(r[k]["nll_nats"] / (64 * np.log(2)), rel=1e-9)
    rows = csv.read_text().strip().splitlines()
    assert rows[0] == "index,exact_nats,exact_bits_per_dim,elbo_nats,elbo_bits_per_dim" and len(rows) == 6
    mean = np.mean([float(row.split(",")[1]) for row in rows[1:]])
    assert mean == pytest.approx(r["exact"]["nll_nats"], rel=1e-5)


def test_encode_decode_round_trip(digits_run, toy_run, tmp_path, capsys):
    for run, data, out in ((digits_run, "digits", "back.npz"), (toy_run, "toy:gmm8:512", "back.csv")):
        lat = tmp_path / f"{run.name}.npz"
        assert cli("encode", run, "--images", data, "--n", 4, "--out", lat, "--rtol", 1e-7, "--atol", 1e-7,
                   "--no-progress") == 0
        with np.load(lat) as f:
            assert f["latents"].shape == f["source"].shape and len(f["latents"]) == 4
        capsys.readouterr()
        assert cli("decode", run, "--latents", lat, "--out", tmp_path / out, "--rtol", 1e-7, "--atol", 1e-7,
                   "--no-progress") == 0
        rel = float(re.search(r"max relative error ([0-9.e+-]+)", capsys.readouterr().out).group(1))
        assert rel < 1e-3
        assert (tmp_path / out).exists()
    # DDIM: the fast path runs and its round trip is reported too
    assert cli("encode", toy_run, "--data", "toy:gmm8:512", "--n", 4, "--out", tmp_path / "d.npz", "--method", "ddim",
               "--steps", 20, "--no-progress") == 0
    with np.load(tmp_path / "d.npz") as f:
        assert str(f["method"]) == "ddim"


def test_sample_report(digits_run, tmp_path, capsys):
    assert cli("sample", digits_run, "--n", 3, "--steps", 4, "--out", tmp_path / "s.npz", "--report",
               "--no-progress") == 0
    out = capsys.readouterr().out
    assert re.search(r"NLL of the 3 samples at temperature 1 given their labels: [0-9.]+ \+- [0-9.]+ bits/dim", out), out


def test_bad_likelihood_input(digits_run, toy_run, tmp_path, capsys):
    e = one_line_error
    e(capsys, cli("nll", digits_run, "--data", "toy:gmm8"), "holds vectors", "models images")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--rtol", 0), "tolerances")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--atol", 1), "tolerances")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--probes", 0, "--estimator", "rademacher"), "--probes")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--method", "elbo", "--levels", 0), "--levels")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--method", "elbo", "--probes", 3), "--probes is an option of the exact")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--levels", 8), "--levels is an option of the ELBO")
    e(capsys, cli("encode", toy_run, "--data", "toy:gmm8", "--out", tmp_path / "l.npz", "--steps", 5), "--steps is for --method ddim")
    e(capsys, cli("nll", digits_run, "--data", "digits", "--n", -1), "--n")
    e(capsys, cli("nll", digits_run, "--data", tmp_path / "missing.npz"), "cannot read")
    assert cli("nll", digits_run, "--data", "digits", "--method", "exactly") == 2  # argparse: unknown choice
    # NaN in a table, and a table with the wrong number of columns
    (tmp_path / "nan.csv").write_text("x0,x1\n1,2\nnan,3\n")
    e(capsys, cli("nll", toy_run, "--data", tmp_path / "nan.csv"), "missing values", "had none in the training data")
    (tmp_path / "swapped.csv").write_text("x1,x0\n1,2\n")  # read by position, so scored wrong without the check
    e(capsys, cli("nll", toy_run, "--data", tmp_path / "swapped.csv"), "same names in another order")
    (tmp_path / "three.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    e(capsys, cli("encode", toy_run, "--data", tmp_path / "three.csv", "--out", tmp_path / "l.npz"), "rows of 3 columns", "2")
    e(capsys, cli("encode", toy_run, "--data", "toy:gmm8", "--out", tmp_path / "l.txt"), ".npz")
    # latents: wrong shape, NaN, not a latents file, missing file, unreadable file
    np.savez(tmp_path / "wrong.npz", latents=np.zeros((2, 3), np.float32))
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "wrong.npz", "--out", tmp_path / "o.csv"), "shape", "N x 2")
    np.savez(tmp_path / "nan.npz", latents=np.full((2, 2), np.nan, np.float32))
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "nan.npz", "--out", tmp_path / "o.csv"), "nan")
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 2)))
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "other.npz", "--out", tmp_path / "o.csv"), "no 'latents'")
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "absent.npz", "--out", tmp_path / "o.csv"), "cannot read")
    np.savez(tmp_path / "complex.npz", latents=np.ones((2, 2)) + 1j)
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "complex.npz", "--out", tmp_path / "o.csv"), "complex")
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "three.csv", "--out", tmp_path / "o.csv"), "not latents written by diffusekit encode")
    e(capsys, cli("info", tmp_path / "three.csv"), "is a file, not a run directory")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "junk.npz", "--out", tmp_path / "o.csv"), "cannot read")
    e(capsys, cli("encode", toy_run, "--data", "toy:gmm8", "--n", 2, "--out", tmp_path / "l.npz", "--method", "ddim",
                  "--steps", 0), "--steps")
    e(capsys, cli("encode", toy_run, "--data", "toy:gmm8", "--out", tmp_path / "l.npz", "--batch-size", 0), "batch")
    e(capsys, cli("nll", toy_run, "--data", "toy:gmm8", "--class-labels"), "no labels")
    np.savez(tmp_path / "lab.npz", np.zeros((2, 8, 8, 1), np.uint8), np.array([3, 12]))
    e(capsys, cli("nll", digits_run, "--data", tmp_path / "lab.npz", "--class-labels"), "outside the run's 10 classes")
    assert cli("nll", digits_run, "--data", tmp_path / "lab.npz", "--n", 1, "--class-labels", "--rtol", 1e-3,
               "--atol", 1e-3) == 0  # digits runs are class-conditional: p(x | 3)
    assert not (tmp_path / "o.csv").exists()  # nothing half-written
    # an output that is the command's own input: refused, the input kept
    np.savez(tmp_path / "lat.npz", latents=np.zeros((2, 2), np.float32))
    before = (tmp_path / "lat.npz").read_bytes()
    e(capsys, cli("decode", toy_run, "--latents", tmp_path / "lat.npz", "--out", tmp_path / "lat.npz"), "overwrite an input")
    e(capsys, cli("nll", toy_run, "--data", tmp_path / "nan.csv", "--csv", tmp_path / "nan.csv"), "overwrite an input")
    assert (tmp_path / "lat.npz").read_bytes() == before and (tmp_path / "nan.csv").read_text().startswith("x0,x1\n1,2")
    # a run whose weights are not finite: said, nothing written (its samples would be NaN rows or black images)
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    spoiled = tmp_path / "spoiled"
    shutil.copytree(toy_run, spoiled)
    ema = spoiled / "last" / "ema.safetensors"
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in load_file(ema).items()},
              ema)
    for args in (("sample", spoiled, "--n", 2, "--out", tmp_path / "s.csv"),
                 ("decode", spoiled, "--latents", tmp_path / "lat.npz", "--out", tmp_path / "s.csv"),
                 ("nll", spoiled, "--data", "toy:gmm8", "--n", 2)):
        e(capsys, cli(*args), "NaN or infinite")
    assert not (tmp_path / "s.csv").exists()


def test_one_sample_json_has_null_standard_error(toy_run, capsys):
    assert cli("nll", toy_run, "--data", "toy:gmm8", "--n", 1, "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["exact"]["nll_nats_se"] is None and np.isfinite(r["exact"]["nll_nats"])
    assert cli("nll", toy_run, "--data", "toy:gmm8", "--n", 1) == 0
    assert "+-" not in capsys.readouterr().out.splitlines()[0]


def test_likelihood_randomness_is_not_the_samples_own_noise():
    # sample --report scores samples drawn with sample_seeds(seed); probes from the same generator would be
    # functions of the sample and bias Hutchinson's estimator
    from diffusekit.runtime import sample_seeds
    from diffusekit.likelihood import LIKELIHOOD_STREAM

    a, b = sample_seeds(3, 50), sample_seeds(3, 50, stream=LIKELIHOOD_STREAM)
    assert not set(a) & set(b) and sample_seeds(3, 50, start=10)[:5] == a[10:15]


@pytest.mark.slow
def test_nll_under_torchrun_matches_one_process(toy_run, tmp_path):
    args = ["nll", str(toy_run), "--data", "toy:gmm8:512", "--n-samples", 7, "--method", "both", "--batch-size", 2,
            "--levels", 4, "--no-progress"]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert cli(*args, "--csv", one) == 0
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "diffusekit", *map(str, args), "--csv", str(two), "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == 1  # rank 0 alone prints
    a, b = (np.loadtxt(p, delimiter=",", skiprows=1) for p in (one, two))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_nll_of_a_csv_streams_as_the_whole_file_and_resumes(toy_run, tmp_path, capsys, monkeypatch):
    import pandas as pd

    from diffusekit.run import Run, load

    g = np.random.default_rng(3)
    pd.DataFrame(g.normal(0, 2, (130, 2)), columns=["x0", "x1"]).to_csv(tmp_path / "rows.csv", index=False)
    run = load(toy_run)
    whole = run.nll(tmp_path / "rows.csv", method="elbo", levels=4)
    methods = {"ode": {"rtol": 1e-3, "atol": 1e-3}, "elbo": {"levels": 4}}
    r = run.nll_csv(tmp_path / "rows.csv", tmp_path / "a.csv", methods=methods, chunk_rows=50)
    got = pd.read_csv(tmp_path / "a.csv")
    assert list(got.columns) == ["index", "exact_nats", "exact_bits_per_dim", "elbo_nats", "elbo_bits_per_dim"]
    # each row's noise is its own: the values in chunks are those of the whole file
    np.testing.assert_allclose(got["elbo_nats"], whole.nats, atol=2e-6)
    s = whole.summary()
    assert r["n"] == 130 and r["elbo"]["nll_nats"] == pytest.approx(s["nll_nats"], abs=1e-5)
    assert r["elbo"]["nll_nats_se"] == pytest.approx(s["nll_nats_se"], rel=1e-4)
    assert r["elbo"]["nfe_per_sample"] == 4 and not (tmp_path / "a.csv.partial").exists()
    # stopped in the third chunk: the first 100 rows are kept; the CLI resumes to the same file
    nll = Run.nll
    monkeypatch.setattr(Run, "nll", interrupted(nll, 5))
    with pytest.raises(KeyboardInterrupt):
        run.nll_csv(tmp_path / "rows.csv", tmp_path / "b.csv", methods=methods, chunk_rows=50)
    monkeypatch.setattr(Run, "nll", nll)
    assert len(pd.read_csv(tmp_path / "b.csv.partial")) == 100 and not (tmp_path / "b.csv").exists()
    args = ["nll", toy_run, "--data", tmp_path / "rows.csv", "--method", "both", "--rtol", 1e-3, "--atol", 1e-3,
            "--levels", 4, "--csv", tmp_path / "b.csv", "--no-progress"]
    one_line_error(capsys, cli(*args), "interrupted run", "--resume")
    one_line_error(capsys, cli(*args, "--resume", "--seed", 1), "other settings", "(--seed)")
    assert cli(*args, "--resume", "--json", "--batch-size", 7) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["n"] == 130 and j["resumed_at"] == 100 and j["elbo"]["nll_nats"] == pytest.approx(r["elbo"]["nll_nats"])
    np.testing.assert_allclose(pd.read_csv(tmp_path / "b.csv"), got, atol=1e-4)  # another batch size: rounding
    one_line_error(capsys, cli(*args, "--resume"), "nothing to --resume")
    one_line_error(capsys, cli("nll", toy_run, "--data", "toy:gmm8:64", "--resume"), "--resume", "a table's CSV")


def test_encode_of_a_csv_streams_its_latents_and_decodes_back(toy_run, tmp_path, capsys, monkeypatch):
    import pandas as pd

    from diffusekit.run import Run, load

    g = np.random.default_rng(5)
    pd.DataFrame(g.normal(0, 2, (90, 2)), columns=["x0", "x1"]).to_csv(tmp_path / "rows.csv", index=False)
    run = load(toy_run)
    whole = run.encode(tmp_path / "rows.csv", method="ddim", steps=10)
    r = run.encode_csv(tmp_path / "rows.csv", tmp_path / "z.csv", chunk_rows=40, method="ddim", steps=10)
    got = pd.read_csv(tmp_path / "z.csv")
    assert list(got.columns) == ["index", "z0", "z1"] and r["n"] == 90 and r["nfe_per_sample"] == 10
    np.testing.assert_allclose(got[["z0", "z1"]].to_numpy(), whole.latents, atol=1e-5)  # batched rounding apart
    encode = Run.encode
    monkeypatch.setattr(Run, "encode", interrupted(encode, 2))
    with pytest.raises(KeyboardInterrupt):
        run.encode_csv(tmp_path / "rows.csv", tmp_path / "y.csv", chunk_rows=40, method="ddim", steps=10)
    monkeypatch.setattr(Run, "encode", encode)
    args = ["encode", toy_run, "--data", tmp_path / "rows.csv", "--out", tmp_path / "y.csv", "--method", "ddim",
            "--steps", 10, "--no-progress"]
    one_line_error(capsys, cli(*args[:-3], "--steps", 12, "--resume"), "other settings", "--steps")
    assert cli(*args, "--resume") == 0 and "wrote 90 latents" in capsys.readouterr().out
    resumed = pd.read_csv(tmp_path / "y.csv")
    assert (resumed[:40] == got[:40]).all().all()  # kept as written
    np.testing.assert_allclose(resumed, got, atol=1e-5)  # the rest in other chunks: batched rounding apart
    # decoded as the same latents from an .npz are
    assert cli("encode", toy_run, "--data", tmp_path / "rows.csv", "--out", tmp_path / "z.npz", "--method", "ddim",
               "--steps", 10, "--no-progress") == 0
    for z in ("z.csv", "z.npz"):
        assert cli("decode", toy_run, "--latents", tmp_path / z, "--out", tmp_path / f"{z}.back.csv", "--method",
                   "ddim", "--steps", 10, "--no-progress") == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "z.csv.back.csv"), pd.read_csv(tmp_path / "z.npz.back.csv"),
                               atol=1e-4)
    one_line_error(capsys, cli("encode", toy_run, "--data", "toy:gmm8:64", "--out", tmp_path / "t.csv"),
                   "--out FILE.npz")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    one_line_error(capsys, cli("decode", toy_run, "--latents", tmp_path / "bad.csv", "--out", tmp_path / "o.csv"),
                   "not latents")
