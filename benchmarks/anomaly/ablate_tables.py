"""Where the tables' AUROC is lost: label-free alternatives to the detector's combination, and the model's memorising.

    python benchmarks/anomaly/ablate_tables.py combos runs/e0 runs/e1 ...      # detectors written by bench_anomaly.py tables
    python benchmarks/anomaly/ablate_tables.py memorising wine [--seed S] [--all-rows]

combos: for every table detector under the given --out folders of `bench_anomaly.py tables`, the raw scores of its
fit split (the held-out normal rows its statistics were fitted on) and of the benchmark's test rows are computed once
with the saved models; then each variant is fitted on the fit split alone (robust z-scores, least-variance weights,
no label) and its AUROC taken on the test rows. All without the nearest-neighbour score (added to tables on
2026-11-28, after this analysis: `bench_anomaly.py tables` measures it). Variants: the detector as `fit` fitted it then (for tables the
profile's distance counts only errors above the normal mean); as it was fitted before (two-sided); the two-sided
profile's Gaussian with 1, 2, 4 or 8 dimensions (adjacent levels averaged) instead of `profile_bins`; the profile replaced by its one-sided level (the
mean log error over the levels, larger = less normal); without the profile; each component alone. Writes
benchmarks/results/anomaly_tables_ablation.json.

memorising: trains one model (the detector's network and split, `--seed`) for 6,500 steps (about what each of the
three models of a 3-minute detector gets here) and reports, along the way, the EMA model's denoising loss on its
training rows and on the held-out fit rows (16 draws of sigma and noise, fixed), and the AUROC on the benchmark's test
rows of the one-sided level of the error profile (16 noise draws). --all-rows trains on every one of the 70% normal
rows, held-out ones included (what a model could learn without the hold-out; the held-out loss is then not held out).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench_anomaly import RESULTS, table_split, tables

from diffusekit.anomaly import (_mahalanobis, _out_of_fold_mahalanobis, _split, binned_profile, component_scores,
                                default_holdout, error_profile, fit_stats, min_variance_weights, noise_levels,
                                normal_scores, raw_scores, robust_location_scale)
from diffusekit.detector import AnomalyDetector
from diffusekit.precond import unconditional


def _robust_z(fit, test):
    med, mad = robust_location_scale(fit)
    return (fit - med) / mad, (test - med) / mad


def variants(fit: dict, test: dict) -> dict:
    """AUROC-ready scores of the test rows [N] for each label-free variant, fitted on the fit split's raw scores."""
    from sklearn.covariance import LedoitWolf

    def weighted(f, t):
        zs = [_robust_z(f[k], t[k]) for k in f]
        w = min_variance_weights(normal_scores(torch.stack([z[0] for z in zs], 1)))  # as `fit_stats`
        return torch.stack([z[1] for z in zs], 1) @ w

    out, comps = {}, {}
    for one_sided in (True, False):  # `fit`'s default for tables now; the two-sided profile of before
        stats = fit_stats(fit, profile_one_sided=one_sided)
        cf, ct = component_scores(fit, stats), component_scores(test, stats)
        cf["profile"] = _out_of_fold_mahalanobis(binned_profile(fit["profile"], stats), one_sided)
        out["as fitted (one-sided profile)" if one_sided else "two-sided profile (as fitted before)"] = weighted(cf, ct)
        comps[one_sided] = cf, ct
    out["one-sided profile alone"] = comps[True][1]["profile"]
    cf, ct = comps[False]  # the variants below replace or drop the two-sided profile
    level_f, level_t = fit["profile"].mean(1), test["profile"].mean(1)
    for b in (1, 2, 4, 8):
        pf, pt = binned_profile(fit["profile"], {"profile_bins": b}), binned_profile(test["profile"], {"profile_bins": b})
        lw = LedoitWolf().fit(pf.numpy())
        out[f"profile Gaussian, {b} dim"] = weighted({**cf, "profile": _out_of_fold_mahalanobis(pf)},
                                                    {**ct, "profile": _mahalanobis(pt, lw.location_, lw.precision_)})
    out["profile as its one-sided level"] = weighted({**cf, "profile": level_f}, {**ct, "profile": level_t})
    out["without the profile"] = weighted({k: v for k, v in cf.items() if k != "profile"},
                                          {k: v for k, v in ct.items() if k != "profile"})
    for k in cf:
        out[f"{k} alone" if k != "profile" else "two-sided profile alone"] = ct[k]
    out["profile's one-sided level alone"] = level_t
    return out


def run_combos(a):
    per = {}
    for name, (normal, anom) in tables().items():
        train, test, y = table_split(normal, anom)
        short = name.split()[0]
        for folder in a.outs:
            det = AnomalyDetector.load(Path(folder) / short, "cpu")
            i = det.info
            held = _split(len(train), i["seed"], i["n_fit"] + i["n_calibration"])[1][: i["n_fit"]]
            x_fit, x_test = det.run.codec.encode(train)[held], det.run.codec.encode(test)
            fit, tst = (raw_scores(det.run, x, seed=i["seed"], draws=i["draws"]) for x in (x_fit, x_test))
            for v, s in variants(fit, tst).items():
                per.setdefault(v, {}).setdefault(name, []).append(float(roc_auc_score(y, s.numpy())))
            print(name, folder, flush=True)
    report = {"detectors": a.outs, "auroc": per,
              "mean": {v: float(np.mean([np.mean(x) for x in d.values()])) for v, d in per.items()}}
    for v, d in per.items():
        print(f"{v:34s}", "  ".join(f"{n.split()[0]} {np.mean(x):.3f}" for n, x in d.items()),
              f"  mean {report['mean'][v]:.3f}")
    (a.results / "anomaly_tables_ablation.json").write_text(json.dumps(report, indent=2))


def run_memorising(a):
    import pandas as pd

    from diffusekit.checkpoint import save_samples
    from diffusekit.data.codecs import VectorCodec
    from diffusekit.train import TrainConfig, Trainer

    normal, anom = next(v for k, v in tables().items() if k.startswith(a.data))
    train, test, y = table_split(normal, anom)
    codec = VectorCodec.fit(train)  # as the benchmark gives the data to `anomaly fit`
    x = codec.encode(train)
    n = len(x)
    tr_idx, held = _split(n, a.seed, int(round(default_holdout(n) * n)))
    fit_idx = held[: len(held) // 2]
    if a.all_rows:
        tr_idx = torch.arange(n)
    tmp = Path(tempfile.mkdtemp())
    try:
        save_samples(str(tmp / "train.csv"), pd.DataFrame(codec.decode(x[tr_idx]), columns=codec.columns))
        tr = Trainer(TrainConfig(data=str(tmp / "train.csv"), out=str(tmp / "run"), steps=a.steps, seed=a.seed,
                                 class_cond="off", device="cpu"), progress=False)
        x, x_test = tr.data.codec.encode(train), tr.data.codec.encode(test)  # the model's own coordinates
        levels = noise_levels(tr.mcfg)

        @torch.no_grad()
        def loss(rows):
            g, total = torch.Generator().manual_seed(5), 0.0
            for _ in range(16):
                sigma, eps = tr.loss.draw((len(rows), *tr.mcfg.in_shape), g)
                total += float(tr.loss(tr.ema_denoiser(), rows, None, sigma, eps).mean()) / 16
            return total

        def level_auroc():
            D, seeds = unconditional(tr.ema_denoiser(), tr.mcfg), torch.arange(len(x_test))
            err = sum(error_profile(D, x_test, levels, seeds + 100_000 * j)[0].exp() for j in range(16)) / 16
            return float(roc_auc_score(y, err.log().mean(1).numpy()))

        rows = []
        marks = {100, 250, 500, 1000, 2000, 3500, 5000, a.steps}
        while tr.step < a.steps:
            tr.train_step()
            tr.step += 1
            if tr.step in marks:
                rows.append({"step": tr.step, "train_loss": loss(x[tr_idx]), "held_fit_loss": loss(x[fit_idx]),
                             "auroc_level": level_auroc()})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    name = f"anomaly_tables_memorising_{a.data}_seed{a.seed}{'_all' if a.all_rows else ''}.json"
    (a.results / name).write_text(json.dumps({"data": a.data, "seed": a.seed, "all_rows": a.all_rows,
                                              "n_train": len(tr_idx), "curve": rows}, indent=2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("combos")
    c.add_argument("outs", nargs="+", help="--out folders of bench_anomaly.py tables")
    m = sub.add_parser("memorising")
    m.add_argument("data", choices=["breast", "wine", "digits"])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--steps", type=int, default=6500)
    m.add_argument("--all-rows", action="store_true")
    for q in (c, m):
        q.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args()
    torch.set_num_threads(2)
    {"combos": run_combos, "memorising": run_memorising}[a.what](a)


if __name__ == "__main__":
    main()
