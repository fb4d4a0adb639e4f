"""The one-class protocol at the detector level, on CPU, around the models `probe_neighbours.py` trained.

    python benchmarks/anomaly/oneclass_detector_cpu.py N_TEST CLASSES [RUNS]   # e.g. 1000 8,0 runs/probe-neighbours

For each class: the detector `anomaly fit` would have built had it trained that model itself (seed 0: the model
trained on the first 70% of the seeded permutation, which `fit` holds out the rest of: 900 images fit the scores,
900 calibrate), built with the detector's own fitting step so no model is trained again; then a seeded N_TEST of the
test images scored (the class normal), next to k-NN on pixels on the same images. One JSON line per class.
On 2 CPU cores about 10 minutes per class with N_TEST 1000 (every score of 2,800 images)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from diffusekit.anomaly import _split
from diffusekit.data import Data, load_data
from diffusekit.detector import AnomalyDetector
from diffusekit.run import Run

n_test = int(sys.argv[1])
classes = [int(c) for c in sys.argv[2].split(",")]
runs = Path(sys.argv[3] if len(sys.argv) > 3 else "runs/probe-neighbours")
train, test = load_data("fashion-mnist:train"), load_data("fashion-mnist:test")
pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n_test]
te = Data(test.x[pick], test.labels[pick], test.codec)
for c in classes:
    t0 = time.time()
    normal = train.x[train.labels == c]
    run, out = runs / f"class{c}" / "run", runs / f"class{c}" / "detector"
    n, n_held = len(normal), 1800
    held = _split(n, 0, n_held)[1]
    # the run's absolute path: AnomalyDetector.load (the CLI) reads a relative one from the detector's folder
    info = {"data": "fashion-mnist", "runs": [str(run.resolve())], "kind": "image", "shape": [1, 28, 28], "columns": None,
            "seed": 0, "features": False, "data_sha256": "", "n_train": n - n_held, "n_fit": 900, "n_calibration": 900}
    det = AnomalyDetector(out, Run.ensemble([run], device="cpu"), info)
    det._fit_scores(Data(normal, None, train.codec), held, 500, False)
    r = det.scores(te.x, batch_size=500)
    y = (te.labels != c).numpy().astype(int)
    knn = NearestNeighbors(n_neighbors=5).fit(normal.flatten(1).numpy()).kneighbors(te.x.flatten(1).numpy())[0].mean(1)
    z = r["z"]
    row = {"class": c, "auroc": roc_auc_score(y, r["score"].numpy()),
           "equal_mean": roc_auc_score(y, torch.stack(list(z.values())).mean(0).numpy()),
           "without_neighbours": roc_auc_score(y, sum(det.stats["weights"][k] * v for k, v in z.items() if k != "neighbours").numpy()),
           "components": {k: roc_auc_score(y, v.numpy()) for k, v in z.items()},
           "weights": det.stats["weights"], "knn_px": roc_auc_score(y, knn), "seconds": time.time() - t0,
           "realised_fpr": {f: float((r["p_value"][y == 0] <= f).double().mean()) for f in (0.01, 0.05)}}
    np.savez_compressed(out / "z.npz", y=y, **{k: v.numpy() for k, v in z.items()})
    print(json.dumps(row), flush=True)
