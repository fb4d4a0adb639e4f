"""Small data with and without augmentation: the same wall-clock budget per run, one run at a time, in one process.

Data sets: Fashion-MNIST reduced to 1,000 training images (100 of each class, the first of each class in the
training split's order), FCD against the 10,000 test images; digits (all 1,797), FCD against digits itself (no
held-out split exists). Per run: FCD (1,000 samples, default sampler) with its bootstrap standard error, and the
memorisation report against the run's training images (share of near-copies by the 1/3 distance-ratio test).

    python benchmarks/quality/bench_small_data.py --minutes 15 --json benchmarks/results/small_data.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import diffusekit as dk
from diffusekit.data import load_data
from diffusekit.evaluate import Evaluator, memorisation


def fashion_1000(out: Path) -> Path:
    d = load_data("fashion-mnist:train")
    labels = d.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == k)[:100] for k in range(10)])
    path = out / "fashion_1000.npz"
    np.savez(path, d.codec.decode(d.x[keep]), labels[keep])
    return path


def digits(out: Path) -> Path:
    d = load_data("digits")
    path = out / "digits.npz"
    np.savez(path, d.codec.decode(d.x), d.labels.numpy())
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--data", nargs="+", default=["fashion", "digits"], choices=["fashion", "digits"])
    p.add_argument("--augment", nargs="+", default=["off", "edm"], choices=["off", "flip", "edm"])
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--out", default="runs/small_data")
    p.add_argument("--json", default="benchmarks/results/small_data.json")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(Path(a.json).read_text()) if os.path.exists(a.json) else {}
    for name in a.data:
        train_path = fashion_1000(out) if name == "fashion" else digits(out)
        ev = Evaluator("fashion-mnist:test" if name == "fashion" else "digits", n_boot=20)
        for aug in a.augment:
            run_dir = out / f"{name}_{aug}_{a.minutes:g}min"
            t0 = time.time()
            run = dk.train(str(train_path), out=run_dir, minutes=a.minutes, augment=aug, progress=False)
            samples = run.sample(a.n_samples, seed=1)
            r = ev(samples)
            mem = memorisation(samples, str(train_path))
            mem.figure().save(out / f"{name}_{aug}_neighbours.png")
            results[f"{name}/{aug}"] = {
                "data": name, "augment": aug, "minutes": a.minutes, "steps": run.step,
                "fcd": r["fcd"], "fcd_se": r["fcd_se"], "precision": r["precision"], "recall": r["recall"],
                "memorisation": mem.summary(), "n_samples": a.n_samples, "wall_s": round(time.time() - t0, 1),
                "load_avg": [round(v, 2) for v in os.getloadavg()]}
            m = results[f"{name}/{aug}"]
            print(f"{name:8s} augment {aug:4s}: {m['steps']} steps, FCD {m['fcd']:.2f} +- {m['fcd_se']:.2f}, "
                  f"near-copies {m['memorisation']['share_near_copies']:.3f}", flush=True)
            Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
