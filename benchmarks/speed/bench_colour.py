"""Colour images of your own: a folder of RGB photographs cut from offline material, trained and sampled through the
command line at 32 and 64 px, and the training cost at 64 and 128 px with and without gradient checkpointing.

The folder: 2,000 square crops (random position, side 1/8 to 1/2 of the photograph's shorter side, seeded) of
scikit-learn's two sample photographs (china, flower) and, where scikit-image is installed, its bundled colour
photographs (astronaut, coffee, chelsea, rocket, hubble_deep_field, immunohistochemistry, retina), saved as PNGs of
their own sizes; `train --image-size` fits them. Cost: peak resident memory of a fresh process and images/s over
--cost-steps steps of batch 32 (preset small, after 2 warm-up steps), one configuration after the other.

    python benchmarks/speed/bench_colour.py --minutes 5 --json benchmarks/results/colour.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import diffusekit as dk

RESULTS = Path(__file__).resolve().parents[1] / "results"


def photographs() -> dict:
    from sklearn.datasets import load_sample_images

    d = load_sample_images()
    photos = {os.path.basename(n).split(".")[0]: im for n, im in zip(d.filenames, d.images)}
    try:
        import skimage.data as sk

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"):
            photos[name] = getattr(sk, name)()
    except ImportError:
        pass
    return photos


def build_folder(root: Path, n: int = 2000, seed: int = 0) -> Path:
    if root.is_dir() and len(os.listdir(root)) >= n:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = list(photographs().values())
    for i in range(n):
        im = photos[i % len(photos)]
        side = int(rng.uniform(1 / 8, 1 / 2) * min(im.shape[:2]))
        top, left = rng.integers(0, im.shape[0] - side + 1), rng.integers(0, im.shape[1] - side + 1)
        Image.fromarray(im[top:top + side, left:left + side, :3]).save(root / f"{i:05d}.png")
    return root


def cost(folder: Path, size: int, checkpointing: bool, steps: int) -> dict:
    """Peak memory and images/s of training at size px, in a fresh process (ru_maxrss is per process)."""
    code = f"""
import json, resource, time, torch
from diffusekit.train import TrainConfig, Trainer
cfg = TrainConfig(data={str(folder)!r}, out={str(folder.parent / f"cost_{size}_{checkpointing}")!r}, image_size={size},
                  steps=1, batch_size=32, checkpointing={checkpointing}, ckpt_every=10**9, log_every=10**9)
t = Trainer(cfg, progress=False)
for _ in range(2):
    t.train_step()
t0 = time.time()
for _ in range({steps}):
    t.train_step()
dt = time.time() - t0
print(json.dumps({{"img_per_s": {steps} * 32 / dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "parameters": sum(p.numel() for p in t.net.parameters())}}))
"""
    shutil.rmtree(folder.parent / f"cost_{size}_{checkpointing}", ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=5, help="training budget of each CLI run")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--cost-sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--cost-steps", type=int, default=5)
    p.add_argument("--out", default="runs/colour")
    p.add_argument("--json", default=str(RESULTS / "colour.json"))
    a = p.parse_args()
    out = Path(a.out)
    folder = build_folder(out / "photos")
    results = {"folder": str(folder), "images": len(os.listdir(folder)), "train": {}, "cost": {}}
    for size in a.sizes:
        run = out / f"run_{size}"
        t0 = time.time()
        subprocess.run(["diffusekit", "train", "--data", str(folder), "--out", str(run), "--image-size", str(size),
                        "--minutes", str(a.minutes), "--no-progress"], check=True)
        grid = RESULTS / f"colour_{size}.png"
        subprocess.run(["diffusekit", "sample", str(run), "--n", "64", "--grid", str(grid), "--out",
                        str(out / f"samples_{size}.npz"), "--no-progress"], check=True)
        results["train"][size] = {"minutes": a.minutes, "steps": dk.load(run).step,
                                  "grid": str(grid.relative_to(RESULTS.parent.parent)), "wall_s": round(time.time() - t0)}
        print(f"{size} px: {results['train'][size]}", flush=True)
        Path(a.json).write_text(json.dumps(results, indent=2))
    for size in a.cost_sizes:
        for ck in (False, True):
            r = cost(folder, size, ck, a.cost_steps)
            results["cost"][f"{size}px{' checkpointing' if ck else ''}"] = r
            print(f"{size} px, checkpointing {ck}: {r['img_per_s']:.1f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB",
                  flush=True)
            Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
