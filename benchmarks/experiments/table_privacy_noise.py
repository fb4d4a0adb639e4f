"""Does a little Gaussian noise on sampled rows (model space: standardized numbers, +-1 one-hots) bring a table
model's DCR share to 50% before it costs fidelity? (issue 29). For each set of bench_synth.py's splits
(SYNTH/NAME/train.csv, holdout.csv, diffusekit-run): as many rows as the training set has, drawn once with the
defaults, then x + h * z for each h, on every dimension or on the numeric ones only, each measured by
`diffusekit.tabular.table_report` against the training rows.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/experiments/table_privacy_noise.py german breast-cancer
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

import diffusekit as dk
from diffusekit.samplers import sample
from diffusekit.tabular import table_report

KEEP = ("column_shape_error", "pair_trend_error", "detection_auroc", "dcr_share_closer_to_training")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+")
    p.add_argument("--synth", default="runs/synth")
    p.add_argument("--levels", type=float, nargs="+", default=[0, 0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="a JSON file for the results")
    a = p.parse_args()
    results = {}
    for name in a.sets:
        d = Path(a.synth) / name
        run = dk.load(d / "diffusekit-run")
        n = len(pd.read_csv(d / "train.csv"))
        c = run._sample_config({"seed": a.seed})
        labels = run._sample_labels(n, c.seed, None, None, None)
        x = sample(run.denoiser, run.model_config, n, c, labels=labels, tuned=run.grids)
        numeric = torch.tensor([not (col in run.codec.categories) for col in run.codec.columns
                                for _ in range(run.codec._width(col))])
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(a.seed))
        for where in ("all", "numeric"):
            for h in a.levels:
                if where == "numeric" and h == 0:
                    continue
                xh = x + h * z * (numeric if where == "numeric" else 1)
                rows = run.to_user(xh, labels)
                m = table_report(rows, str(d / "train.csv"), holdout=str(d / "holdout.csv"), target="class")
                r = {"noise_on": where, "h": h, **{k: round(m[k], 4) for k in KEEP},
                     "ml_gap": round(m["ml_efficiency"]["gap"], 4), "copies": m["exact_copies_of_training"]}
                print(name, json.dumps(r), flush=True)
                results.setdefault(name, []).append(r)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
