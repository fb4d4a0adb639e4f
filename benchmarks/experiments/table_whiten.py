"""Synthetic rows from a whitened table (issue 29, diamonds): each numeric column through the quantile map, then the
numeric dimensions whitened together (ZCA, by the training rows' covariance), so that directions the columns hardly
vary along (carat against x y z, x against y) reach the network at unit scale; trained with the defaults on that
table, sampled, mapped back, measured like bench_synth.py's rows.

    python benchmarks/experiments/table_whiten.py runs/exp_decay/diamonds runs/expw/diamonds_zca 10

DIR holds bench_synth.py's train.csv and holdout.csv (class column `class`); writes OUT/syn.csv and OUT/report.json.
Then prints diamonds' near-exact relations in the held-out rows, in any further CSV files named after the three
arguments (rows of the same table from other runs) and in OUT/syn.csv: |200 z / (x + y) - depth| (median, 90th
percentile), and the interquartile ranges of log(carat / (x y z)) and x / y.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffusekit.data import load_data
from diffusekit.tabular import table_report


def main():
    src, out, minutes = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    codec = load_data(str(src / "train.csv"), numeric="quantile").codec
    train = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    x = codec.encode(train[codec.columns].to_numpy(object)).numpy().astype(np.float64)
    numeric = [c for c in codec.columns if c not in codec.categories]
    cats = [c for c in codec.columns if c in codec.categories]
    dims = [codec.slices[codec.columns.index(c)].stop - 1 for c in numeric]
    mean = x[:, dims].mean(0)
    w, v = np.linalg.eigh(np.cov(x[:, dims].T))
    print("covariance eigenvalues of the quantile-mapped columns", np.round(w, 4))
    white, unwhite = v @ np.diag(w ** -0.5) @ v.T, v @ np.diag(w ** 0.5) @ v.T
    names = [f"w_{c}" for c in numeric]
    table = pd.DataFrame((x[:, dims] - mean) @ white, columns=names).map(lambda t: f"{t:.9f}")
    pd.concat([table, train[cats]], axis=1).to_csv(out / "wtrain.csv", index=False)
    run = out / "run"
    if not (run / "last").exists():
        subprocess.run([sys.executable, "-m", "diffusekit", "train", "--data", str(out / "wtrain.csv"), "--out",
                        str(run), "--minutes", minutes, "--target", "class", "--no-progress"], check=True)
    subprocess.run([sys.executable, "-m", "diffusekit", "sample", str(run), "--n", str(len(train)), "--out",
                    str(out / "wsamp.csv"), "--no-progress"], check=True)
    s = pd.read_csv(out / "wsamp.csv", dtype=str, keep_default_na=False)
    cells = train[codec.columns].iloc[:1].to_numpy(object).repeat(len(s), 0)  # categorical cells from the samples
    for c in cats:
        cells[:, codec.columns.index(c)] = s[c].to_numpy(object)
    z = codec.encode(cells).numpy().astype(np.float64)
    z[:, dims] = s[names].to_numpy(float) @ unwhite + mean
    rows = pd.DataFrame(codec.decode(torch.from_numpy(z)), columns=codec.columns)[train.columns]
    rows.to_csv(out / "syn.csv", index=False)
    rep = table_report(str(out / "syn.csv"), str(src / "train.csv"), holdout=str(src / "holdout.csv"), target="class")
    (out / "report.json").write_text(json.dumps(rep, indent=1))
    ml = rep["ml_efficiency"]
    print(f"shapes {rep['column_shape_error']:.4f}  trends {rep['pair_trend_error']:.4f}  C2ST "
          f"{rep['detection_auroc']:.3f}  ML {ml['synthetic']:.4f} (real {ml['real']:.4f})  DCR "
          f"{rep['dcr_share_closer_to_training']:.3f}  copies {rep['exact_copies_of_training']}")
    for path in [src / "holdout.csv", *sys.argv[4:], out / "syn.csv"]:
        relations(path)


def relations(path):
    d = pd.read_csv(path)
    d = d[(d.x > 0) & (d.y > 0) & (d.z > 0)]
    depth = (200 * d.z / (d.x + d.y) - d.depth).abs()
    iqr = lambda v: v.quantile(0.75) - v.quantile(0.25)  # noqa: E731
    print(f"{str(path):50s} depth departs {depth.median():.3f} (90%: {depth.quantile(0.9):.3f})  IQR log(carat / xyz) "
          f"{iqr(np.log(d.carat / (d.x * d.y * d.z))):.4f}  IQR x / y {iqr(d.x / d.y):.4f}")


if __name__ == "__main__":
    main()
