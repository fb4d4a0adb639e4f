"""How a table model's fidelity and privacy move with training length, beside its held-out denoising loss (issue 29):
does stopping where the held-out loss is lowest keep synthetic rows from copying the training rows?

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/tables/heldout_curve.py german crx --synth runs/synth

Reads the splits bench_synth.py wrote (SYNTH/NAME/train.csv, holdout.csv); trains `train --target class` with the
defaults, resumed to 1k, 2k, ..., 64k steps (a resume continues the same run exactly). At each length: the EDM-weighted
denoising loss of the EMA model (training noise levels, 20 draws per row, the same draws for every length) on the
training rows and on the held-out rows, and every measure of `diffusekit.tabular.table_report` for as many synthetic
rows as the training set has. Prints one JSON line per length; writes benchmarks/results/heldout_curve.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

import diffusekit as dk
from diffusekit.data import load_data, with_target
from diffusekit.losses import DiffusionLoss, noise_distribution
from diffusekit.tabular import table_report

RESULTS = Path(__file__).resolve().parent.parent / "results"
KEEP = ("column_shape_error", "pair_trend_error", "detection_auroc", "dcr_share_closer_to_training")


def denoising_loss(run, path, categorical) -> float:
    d = with_target(load_data(path, categorical=categorical), "class")
    x = run.codec.encode(d.codec.decode(d.x), unseen=[]).float()
    labels = torch.tensor([run.class_names.index(c) for c in np.asarray(d.class_names)[d.labels.numpy()]])
    tm = run.config["train"]
    loss = DiffusionLoss(noise_distribution(tm["noise"], tm["p_mean"], tm["p_std"]), "edm",
                         run.model_config.sigma_data)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        return torch.stack([loss(run.denoiser, x, labels, generator=g) for _ in range(20)]).mean().item()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+")
    p.add_argument("--synth", default="runs/synth")
    p.add_argument("--out", default="runs/heldout-curve")
    a = p.parse_args()
    res_path = RESULTS / "heldout_curve.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    for name in a.sets:
        d, out = Path(a.synth) / name, Path(a.out) / name
        shutil.rmtree(out, ignore_errors=True)
        categorical = sorted(set(load_data(str(d / "train.csv")).codec.categories) | {"class"})
        n = sum(1 for _ in open(d / "train.csv")) - 1
        rows = []
        for steps in (1000, 2000, 4000, 8000, 16000, 32000, 64000):
            run = dk.train(None, out, resume=True, steps=steps, progress=False) if out.exists() else \
                dk.train(str(d / "train.csv"), out, target="class", steps=steps, progress=False)
            m = table_report(run.sample(n, seed=0), str(d / "train.csv"), holdout=str(d / "holdout.csv"),
                             target="class")
            r = {"steps": steps, **{f"loss_{w}": round(denoising_loss(run, str(d / f"{f}.csv"), categorical), 4)
                                    for w, f in (("train", "train"), ("held_out", "holdout"))},
                 **{k: round(m[k], 4) for k in KEEP}, "ml_gap": round(m["ml_efficiency"]["gap"], 4)}
            print(name, json.dumps(r), flush=True)
            rows.append(r)
        results[name] = rows
        res_path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
