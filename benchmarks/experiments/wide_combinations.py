"""Label-free ways to combine the table detector's scores, checked on the test scores that
benchmarks/anomaly/bench_wide.py keeps (DET/test_scores.npz: labels, each score's robust z, the baselines' scores):
AUROC per set of each rule, and on how many sets each is ahead of the k-NN distance and IsolationForest.

    python benchmarks/experiments/wide_combinations.py [runs/wide]
"""
import sys
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score


def rules(z: dict, saved) -> dict:
    """Each rule's scores of the test rows (z: each score's robust z; saved: the file, with the baselines' scores)."""
    Z = np.stack(list(z.values()), 1)
    return {"equal": Z.mean(1), "knn": saved["kNN distance"], "IF": saved["IsolationForest"],
            "top2": np.sort(Z, 1)[:, -2:].mean(1), "max": Z.max(1), "lse": logsumexp(Z, 1),
            "median": np.median(Z, 1), "in_nb x2": (Z.sum(1) + z["input_neighbours"]) / (Z.shape[1] + 1),
            "clip-3": np.clip(Z, -3, None).mean(1),
            "no-prof": np.mean([v for k, v in z.items() if k != "profile"], 0)}


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/wide")
    files = sorted(folder.glob("*-s*/test_scores.npz"))
    if not files:
        sys.exit(f"error: no */test_scores.npz under {folder} (run benchmarks/anomaly/bench_wide.py --out {folder})")
    rows = []
    for f in files:
        saved = np.load(f)
        z = {k[2:]: saved[k] for k in saved.files if k.startswith("z_")}
        rows.append((f.parent.name, {k: roc_auc_score(saved["y"], v) for k, v in rules(z, saved).items()}))
    keys = list(rows[0][1])
    print(f"{'set':22s}" + "".join(f"{k:>9s}" for k in keys))
    for name, r in rows:
        print(f"{name:22s}" + "".join(f"{r[k]:9.4f}" for k in keys))
    print(f"{'mean':22s}" + "".join(f"{np.mean([r[k] for _, r in rows]):9.4f}" for k in keys))
    for k in keys:
        print(k, "beats knn", sum(r[k] > r["knn"] for _, r in rows), "beats IF", sum(r[k] > r["IF"] for _, r in rows),
              "of", len(rows))


if __name__ == "__main__":
    main()
