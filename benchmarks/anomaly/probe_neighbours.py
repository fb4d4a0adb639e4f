"""The nearest-neighbour score alone, on the Fashion-MNIST one-class protocol, on CPU.

    python benchmarks/anomaly/probe_neighbours.py [--minutes 3] [--classes 8 0 1 ...]

For each class c: train a model (`TrainConfig` defaults, --minutes, class-conditioning off) on the 4,200 images of
c that `anomaly fit` would train on (seed 0: the first 70% of a seeded permutation), then the AUROC over the whole
test set (c normal, the other nine anomalous) of the mean distance to the 5 nearest training images in the U-Net's
bottleneck, of images noised to 0.3 sigma_data, averaged to r x r positions (r = 7, the full 7 x 7 map, down to 1),
next to the same k-NN distance on raw pixels (fit on all 6,000 images of c, as the baselines are). Trained models are
kept in --out and reused; --set FIELD=VALUE changes a training setting. Component-level only: the detector's
combination is `bench_anomaly.py oneclass`.
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from torch.nn import functional as F

POOLS = (7, 4, 3, 2, 1)


def knn_auroc(y, ref, query):
    return float(roc_auc_score(y, NearestNeighbors(n_neighbors=5).fit(ref).kneighbors(query)[0].mean(1)))


def train_overrides(items):
    """(field, value) pairs from FIELD=VALUE strings, each value parsed as its TrainConfig field's type."""
    from dataclasses import fields

    from diffusekit.train import TrainConfig

    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in items:
        k, _, v = item.partition("=")
        if k not in types:
            raise SystemExit(f"--set {item}: no TrainConfig field {k!r}")
        t = (types[k] if isinstance(types[k], str) else types[k].__name__).split(" | ")[0]  # "int | None": int
        if t == "bool" and v.lower() not in ("true", "false"):
            raise SystemExit(f"--set {item}: {k} is true or false")
        yield k, (v.lower() == "true" if t == "bool" else {"int": int, "float": float}.get(t, str)(v))


def main():
    from diffusekit import load
    from diffusekit.checkpoint import save_samples
    from diffusekit.data import load_data
    from diffusekit.train import TrainConfig, Trainer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--classes", type=int, nargs="+", default=[8, 0, 1, 2, 3, 4, 5, 6, 7, 9])
    p.add_argument("--out", type=Path, default=Path("runs/probe-neighbours"))
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent.parent / "results")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a TrainConfig field for the trainings, e.g. --set warmup_steps=20 --set bf16=true")
    a = p.parse_args()
    overrides = dict(train_overrides(a.set))
    train, test = load_data("fashion-mnist:train"), load_data("fashion-mnist:test")
    report = {"minutes": a.minutes, "train": overrides, "load_before": os.getloadavg(), "classes": {}}
    for c in a.classes:
        normal = train.x[train.labels == c]
        tr = normal[torch.randperm(len(normal), generator=torch.Generator().manual_seed(0))[:4200]]
        y = (test.labels != c).numpy().astype(int)
        d = a.out / f"class{c}"
        if not (d / "run" / "last").exists():
            d.mkdir(parents=True, exist_ok=True)
            save_samples(str(d / "train.npz"), train.codec.decode(tr))
            Trainer(TrainConfig(**{"data": str(d / "train.npz"), "out": str(d / "run"), "minutes": a.minutes,
                                   "class_cond": "off", "device": "cpu", **overrides}), progress=False).run()
        run = load(d / "run", device="cpu")
        s = 0.3 * run.model_config.sigma_data

        @torch.no_grad()
        def bottleneck(x, seed):
            g, out = torch.Generator().manual_seed(seed), []
            for i in range(0, len(x), 500):
                xb = x[i:i + 500]
                rep = run.denoiser.representation(xb + s * torch.randn(xb.shape, generator=g), s, positions=7)
                out.append(rep.view(len(xb), -1, 7, 7))  # the whole 7 x 7 bottleneck, averaged below
            return torch.cat(out)

        ref, query = bottleneck(tr, 1), bottleneck(test.x, 2)
        row = {"step": run.step, "knn_pixels": knn_auroc(y, normal.flatten(1).numpy(), test.x.flatten(1).numpy())}
        for r in POOLS:
            row[f"neighbours_{r}x{r}"] = knn_auroc(y, *(F.adaptive_avg_pool2d(v, r).flatten(1).numpy() for v in (ref, query)))
        report["classes"][str(c)] = row
        print(c, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
        done = report["classes"].values()
        report["mean"] = {k: float(np.mean([v[k] for v in done])) for k in row if k != "step"}
        report["load_after"] = os.getloadavg()
        a.results.mkdir(parents=True, exist_ok=True)
        (a.results / "anomaly_oneclass_neighbours_probe.json").write_text(json.dumps(report, indent=2))
    print("mean", json.dumps({k: round(v, 4) for k, v in report["mean"].items()}))


if __name__ == "__main__":
    main()
