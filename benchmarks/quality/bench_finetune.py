"""Fine-tuning against training from scratch on a new class: a model trained on eight Fashion-MNIST classes (0-7,
their 48,000 training images, --source-minutes), then 500 training images of a ninth (class 8, "Bag": the first 500
in the training split) for --minutes: fine-tuned from that model (`train --init-from`) against trained from scratch,
one after the other in one process. FCD of 1,000 samples of class 8 against the 1,000 test images of class 8, in the
shipped Fashion-MNIST classifier's features (bootstrap standard error over the samples).

    python benchmarks/quality/bench_finetune.py --source-minutes 10 --minutes 5 [--finetune-lr 0.002 ...] --json F

Rows already in the JSON file (same budgets) are kept and not run again.
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
from diffusekit.evaluate import Evaluator, features
from diffusekit.metrics import bootstrap_se, frechet_distance

NEW = 8


def subset(d, keep, path):
    np.savez(path, d.codec.decode(d.x[keep]), d.labels.numpy()[keep])
    return str(path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source-minutes", type=float, default=10)
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--out", default="runs/finetune")
    p.add_argument("--json", default="benchmarks/results/finetune.json")
    p.add_argument("--finetune-lr", type=float, nargs="*", default=[],
                   help="also fine-tune at these learning rates (the default run uses train's fine-tuning default)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_data("fashion-mnist:train"), load_data("fashion-mnist:test")
    labels = train.labels.numpy()
    eight = subset(train, np.flatnonzero(labels < NEW), out / "eight.npz")
    ninth = subset(train, np.flatnonzero(labels == NEW)[:500], out / "ninth_500.npz")
    ev = Evaluator("fashion-mnist:test")
    f_ref, _ = features(ev.model, test.x[test.labels == NEW])
    results = {"source_minutes": a.source_minutes, "minutes": a.minutes, "n_samples": a.n_samples}
    if os.path.exists(a.json):  # the same comparison measured before: keep its rows, run only the missing ones
        old = json.loads(Path(a.json).read_text())
        if all(old.get(k) == v for k, v in results.items()):
            results = old
    source = out / f"source_{a.source_minutes:g}min"
    if not (source / "config.json").exists():
        dk.train(eight, out=source, minutes=a.source_minutes, progress=False)
    results["source_steps"] = dk.load(source).step
    variants = [("fine-tuned", {"init_from": str(source)}), ("from scratch", {})]
    variants += [(f"fine-tuned lr {lr:g}", {"init_from": str(source), "lr": lr}) for lr in a.finetune_lr]
    for name, extra in variants:
        if name in results:
            continue
        t0 = time.time()
        run = dk.train(ninth, out=out / f"{name.replace(' ', '_')}_{a.minutes:g}min", minutes=a.minutes,
                       progress=False, **extra)
        x = run.to_model_space(run.sample(a.n_samples, label=NEW, seed=1))[0]
        f, _ = features(ev.model, x)
        results[name] = {"steps": run.step, "lr": run.config["train"]["lr"], "fcd": frechet_distance(f, f_ref),
                         "fcd_se": bootstrap_se(frechet_distance, f, f_ref, 20), "wall_s": round(time.time() - t0, 1),
                         "load_avg": [round(v, 2) for v in os.getloadavg()]}
        r = results[name]
        print(f"{name:12s}: {r['steps']} steps (lr {r['lr']:g}), FCD {r['fcd']:.2f} +- {r['fcd_se']:.2f}", flush=True)
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
