#!/bin/sh
# Does this checkout compute what an earlier commit computed? Runs the same CLI commands with both (the earlier one
# from a git worktree) on the same inputs, one torch thread, and compares every output: trained weights, samples,
# likelihoods, latents, the four restorations, anomaly scores. Identical outputs carry every benchmark figure over.
#   sh benchmarks/experiments/same_as_release.sh 5247010 [WORK_DIR]
set -eu
OLD=$1
W=${2:-$(mktemp -d)}
NEW_SRC=$(pwd)/src
git worktree add -f "$W/old-src" "$OLD" >/dev/null 2>&1
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
python - "$W" <<'EOF'
import sys, numpy as np
from sklearn.datasets import load_wine
w = sys.argv[1]
d = load_wine(as_frame=True)
df = d.frame.iloc[:, :6]
df[d.target < 2].to_csv(f"{w}/normal.csv", index=False)
df.to_csv(f"{w}/incoming.csv", index=False)
from sklearn.datasets import load_digits
im = (load_digits().images[:8] * (255 / 16)).round().astype(np.uint8)
np.savez(f"{w}/x.npz", im)
np.savez(f"{w}/small.npz", im[:, ::2, ::2])
EOF
for v in old new; do
  src=$([ $v = old ] && echo "$W/old-src/src" || echo "$NEW_SRC")
  o=$W/$v; mkdir -p "$o"
  dk() { PYTHONPATH=$src python -m diffusekit "$@" >>"$o/log.txt" 2>&1; }
  dk_out() { PYTHONPATH=$src python -m diffusekit "$@" 2>>"$o/log.txt"; }
  dk train --data digits --out "$o/run" --preset tiny --steps 200 --batch-size 32 --ckpt-every 200
  dk sample "$o/run" --n 64 --seed 3 --out "$o/samples.npz"
  dk sample "$o/run" --n 16 --class 3 --guidance 2 --sampler heun --steps 10 --out "$o/guided.npz"
  dk_out nll "$o/run" --data digits --n 16 --json > "$o/nll.json"
  dk_out nll "$o/run" --data digits --n 16 --method elbo --json > "$o/elbo.json"
  dk encode "$o/run" --data "$W/x.npz" --out "$o/latents.npz"
  dk decode "$o/run" --latents "$o/latents.npz" --out "$o/decoded.npz"
  dk inpaint "$o/run" --images "$W/x.npz" --mask box:4 --n-samples 2 --out "$o/inpaint.npz"
  dk upscale "$o/run" --images "$W/small.npz" --factor 2 --out "$o/upscale.npz"
  dk denoise "$o/run" --images "$W/x.npz" --sigma 0.1 --out "$o/denoise.npz"
  dk deblur "$o/run" --images "$W/x.npz" --kernel gaussian:1 --sigma 0.01 --out "$o/deblur.npz"
  dk anomaly fit --data "$W/normal.csv" --out "$o/det" --steps 100 --preset tiny
  dk anomaly score "$o/det" --data "$W/incoming.csv" --out "$o/scores.csv" --fpr 0.1
  dk anomaly fit --data digits --out "$o/det-img" --steps 100 --preset tiny --features
  dk anomaly score "$o/det-img" --data "$W/x.npz" --out "$o/scores-img.csv" --fpr 0.1
done
python - "$W" <<'EOF'
import json, sys
import numpy as np, pandas as pd
from safetensors.numpy import load_file
w = sys.argv[1]
def same(name, a, b):
    a, b = np.asarray(a), np.asarray(b)
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.shape == b.shape else float("inf")
    print(f"{name:28s} max |old - new| = {diff:.3g}")
for k in ("ema", "model"):
    o, n = load_file(f"{w}/old/run/last/{k}.safetensors"), load_file(f"{w}/new/run/last/{k}.safetensors")
    same(f"weights ({k})", max(float(np.abs(o[t] - n[t]).max()) for t in o) if o.keys() == n.keys() else np.inf, 0)
for f in ("samples", "guided", "latents", "decoded", "inpaint", "upscale", "denoise", "deblur"):
    with np.load(f"{w}/old/{f}.npz") as o, np.load(f"{w}/new/{f}.npz") as n:
        same(f, o["arr_0"] if "arr_0" in o else o["latents"], n["arr_0"] if "arr_0" in n else n["latents"])
for f in ("nll", "elbo"):
    o, n = (json.load(open(f"{w}/{v}/{f}.json")) for v in ("old", "new"))
    m = next(k for k in o if isinstance(o[k], dict))
    same(f"{f} bits/dim", o[m]["bits_per_dim"], n[m]["bits_per_dim"])
for f in ("scores", "scores-img"):
    o, n = (pd.read_csv(f"{w}/{v}/{f}.csv") for v in ("old", "new"))
    same(f"anomaly {f} score", o["score"], n["score"])
    same(f"anomaly {f} p-value", o["p_value"], n["p_value"])
    if "top_columns" in o:
        print("top columns equal:", list(o["top_columns"]) == list(n["top_columns"]))
EOF
git worktree remove --force "$W/old-src"
