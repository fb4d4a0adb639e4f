"""Variants of the k-NN distance on the wide anomaly benchmark's splits (issue 29): is there a distance that ranks
anomalies better than the plain k-NN baseline on most tables, for the detector's `input_neighbours` to use? No
training: each variant is fit on the 60% of normal rows and scored on the test rows, both encoded by one codec
(standardized numbers, one-hot categories), five seeds. Prints mean AUROC per table and variant; writes nothing.

    python benchmarks/experiments/knn_variants.py [--seeds 0 1 2 3 4]

Variants: the mean distance to the k nearest (k = 1, 5, 10, 20); k = 5 after whitening by the training rows'
Ledoit-Wolf covariance (Mahalanobis); k = 5 on columns scaled by median and interquartile range.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "anomaly"))
from bench_wide import SETS, seed_split  # noqa: E402


def knn(tr, te, k=5):
    return NearestNeighbors(n_neighbors=k).fit(tr).kneighbors(te)[0].mean(1)


def mahalanobis(tr, te, k=5):
    lw = LedoitWolf().fit(tr)
    w, v = np.linalg.eigh(lw.covariance_)
    white = v @ np.diag(w ** -0.5) @ v.T
    return knn((tr - lw.location_) @ white, (te - lw.location_) @ white, k)


def robust(tr, te, k=5):
    med = np.median(tr, 0)
    iqr = np.subtract(*np.percentile(tr, [75, 25], 0))
    scale = np.where(iqr > 1e-9, iqr, tr.std(0) + 1e-9)
    return knn((tr - med) / scale, (te - med) / scale, k)


VARIANTS = {"k=5": knn, "k=1": lambda a, b: knn(a, b, 1), "k=10": lambda a, b: knn(a, b, 10),
            "k=20": lambda a, b: knn(a, b, 20), "mahalanobis k=5": mahalanobis, "median/IQR k=5": robust}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    a = p.parse_args()
    means = {}
    for name in SETS:
        aurocs = {v: [] for v in VARIANTS}
        for seed in a.seeds:
            _, _, _, y, x_tr, x_te = seed_split(name, seed)
            for v, fn in VARIANTS.items():
                aurocs[v].append(roc_auc_score(y, fn(x_tr.numpy(), x_te.numpy())))
        means[name] = {v: float(np.mean(s)) for v, s in aurocs.items()}
        print(name.ljust(17), "  ".join(f"{v} {m:.4f}" for v, m in means[name].items()), flush=True)
    print("mean".ljust(17), "  ".join(f"{v} {np.mean([m[v] for m in means.values()]):.4f}" for v in VARIANTS))
    print("ahead of k=5 on", {v: sum(m[v] > m["k=5"] for m in means.values()) for v in VARIANTS if v != "k=5"})


if __name__ == "__main__":
    main()
