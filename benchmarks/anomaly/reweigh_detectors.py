"""The combination's weight rules compared on fitted image detectors, without refitting or rescoring them.

    python benchmarks/anomaly/reweigh_detectors.py oneclass RUNS [--classes 8 0 ...]   # detectors of oneclass_detector_cpu.py
    python benchmarks/anomaly/reweigh_detectors.py ood DETECTOR Z_NPZ                   # a detector of bench_anomaly.py ood

A detector's component z-scores do not depend on its weights (the medians and MADs come from the fit split), so the
AUROC another rule would give is the labelled z-scores it saved (z.npz) times that rule's weights. The weights need
the fit split's z-scores, which detectors do not keep: they are scored again here with the detector's own fitting step,
on the fit half only (the calibration half is not needed for weights; its rows are filled with copies and dropped).
Check: the old rule on them gives the weights stored in detector.json. Rules: "least variance" of the robust z-scores
clipped to +-10 (the rule until 2026-11-28), "least variance of normal scores" (of their rank quantiles: the rule
now), the plain mean, and the neighbour distance alone (reported, not label-free choices). The fit z-scores are kept
in --results (fit_z_*.npy) and reused."""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import diffusekit.anomaly as A
import diffusekit.detector as DET
from diffusekit.data import Data, load_data

RESULTS = Path(__file__).resolve().parent.parent / "results" / "reweigh"  # benchmarks/results/reweigh


def fit_z(det, data, cache: Path):
    """The fit split's component z-scores [n_fit, K] of `det` (fit on `data`), as `fit_stats` computes them."""
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    k, seen = det.info["n_fit"], {}
    score_all, ranks = DET.raw_scores, A.normal_scores  # the fitting step (detector.py) calls its own raw_scores

    def fit_half(run, x, **kw):
        r = score_all(run, x[:k], **kw)
        return {name: torch.cat([v, v[:len(x) - k]]) for name, v in r.items()}

    def spy(z):  # `fit_stats` hands the z-scores to the weights' rule here
        seen["z"] = z.clone()
        return ranks(z)

    DET.raw_scores, A.normal_scores, path, i = fit_half, spy, det.path, det.info
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the fitting step writes a detector: not over this one
            det.path = Path(tmp)
            # the held-out rows `fit` chose (`refit` would also check the data's digest, which some detectors lack)
            det._fit_scores(data, A._split(len(data.x), i["seed"], i["n_fit"] + i["n_calibration"])[1], 500, False)
    finally:
        DET.raw_scores, A.normal_scores, det.path = score_all, ranks, path
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, seen["z"].numpy())
    return seen["z"]


def compare(stored: dict, z_fit, labelled: Path) -> dict:
    d = np.load(labelled)
    names = list(stored)
    rules = {"least variance": A.min_variance_weights(z_fit.clamp(-10, 10)),
             "least variance of normal scores": A.min_variance_weights(A.normal_scores(z_fit)),
             "plain mean": torch.full((len(names),), 1 / len(names), dtype=torch.float64)}
    old = rules["least variance"].tolist()
    assert np.allclose(old, [stored[n] for n in names], atol=1e-9), f"fit z-scores do not give the stored weights {old}"
    zt = np.stack([d[n] for n in names], 1)
    out = {rule: {"auroc": float(roc_auc_score(d["y"], zt @ w.numpy())),
                  "weights": dict(zip(names, np.round(w.numpy(), 4).tolist()))} for rule, w in rules.items()}
    out["neighbours alone"] = {"auroc": float(roc_auc_score(d["y"], d["neighbours"]))}
    return out


def main():
    from diffusekit.detector import AnomalyDetector
    from diffusekit.run import Run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["oneclass", "ood"])
    p.add_argument("path", type=Path, help="oneclass: the folder of classC/detector; ood: the detector")
    p.add_argument("z", type=Path, nargs="?", help="ood: the labelled z-scores (results/anomaly_ood_z.npz)")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args()
    report = {}
    if a.task == "oneclass":
        train = load_data("fashion-mnist:train")
        for c in a.classes:
            d = a.path / f"class{c}" / "detector"  # its run is class{c}/run (older detectors name it relatively)
            info = json.loads((d / "detector.json").read_text())
            det = AnomalyDetector(d, Run.ensemble([a.path / f"class{c}" / "run"], device="cpu"), info)
            stored = dict(det.stats["weights"])  # before fit_z refits them
            normal = Data(train.x[train.labels == c], None, train.codec)
            z_fit = fit_z(det, normal, a.results / f"fit_z_oneclass_c{c}.npy")
            report[str(c)] = compare(stored, z_fit, a.path / f"class{c}" / "detector" / "z.npz")
            print(c, json.dumps({r: round(v["auroc"], 4) for r, v in report[str(c)].items()}), flush=True)
        rules = next(iter(report.values()))
        report["mean"] = {r: float(np.mean([report[str(c)][r]["auroc"] for c in a.classes])) for r in rules}
    else:  # the normal data bench_anomaly.py ood fits on: a seeded 2,000 of the Fashion-MNIST test split
        fm = load_data("fashion-mnist:test")
        perm = torch.randperm(len(fm), generator=torch.Generator().manual_seed(0))
        det = AnomalyDetector.load(a.path, "cpu")
        stored = dict(det.stats["weights"])
        report = compare(stored, fit_z(det, Data(fm.x[perm[:2000]], None, fm.codec), a.results / "fit_z_ood.npy"), a.z)
    summary = report["mean"] if a.task == "oneclass" else {r: v["auroc"] for r, v in report.items()}
    print("result", json.dumps({r: round(v, 4) for r, v in summary.items()}))
    a.results.mkdir(parents=True, exist_ok=True)
    part = "" if a.task == "ood" or sorted(a.classes) == list(range(10)) else "_" + "_".join(map(str, a.classes))
    (a.results / f"reweigh_{a.task}{part}.json").write_text(json.dumps(report, indent=2))  # a subset: its own file


if __name__ == "__main__":
    main()
