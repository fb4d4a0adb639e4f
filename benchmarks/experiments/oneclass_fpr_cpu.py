"""Realised false-positive rate of a one-class detector on every normal test image of its class, on CPU.

    python benchmarks/experiments/oneclass_fpr_cpu.py CLASSES [RUNS]   # e.g. 2,0 runs/probe-neighbours

Reads the detectors `benchmarks/anomaly/oneclass_detector_cpu.py` built (RUNS/class{c}/detector) and scores the 1,000 Fashion-MNIST
test images of class c (all normal), flagging p <= 0.01 and p <= 0.05 against the detector's own calibration scores.
`oneclass_detector_cpu.py` checks the rate on its seeded 1,000 test images of all classes (about 100 normal ones per
class), too few to tell a 1% rule from a 2% one. About 4 minutes per class on 2 CPU cores. One JSON line per class."""
import json
import sys
import time
from pathlib import Path

import torch

from diffusekit.data import load_data
from diffusekit.detector import AnomalyDetector

classes = [int(c) for c in sys.argv[1].split(",")]
runs = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/probe-neighbours")
torch.set_num_threads(2)
test = load_data("fashion-mnist:test")
for c in classes:
    t0 = time.time()
    det = AnomalyDetector.load(runs / f"class{c}" / "detector", "cpu")
    p = det.scores(test.x[test.labels == c], batch_size=500)["p_value"]
    n = det.info["n_calibration"]
    print(json.dumps({"class": c, "n_normal": len(p), "n_calibration": n,
                      **{f"flagged at {a}": int((p <= a).sum()) for a in (0.01, 0.05)},
                      # a valid rule's spread for this one calibration set and these test images, about
                      **{f"sd at {a}": (a * (1 - a) / n + a * (1 - a) / len(p)) ** 0.5 for a in (0.01, 0.05)},
                      "seconds": round(time.time() - t0)}), flush=True)
