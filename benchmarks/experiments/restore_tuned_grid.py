"""Does restoration gain from the run's tuned grid? PSNR / SSIM of inpaintings (RePaint and DDNM; a 14x14 centre box
and 70% random pixels missing) at the tuned grid's step count, on the run's tuned grid (`tune-steps`; the default
now) against the karras grid, on the same test images, masks and seeds (a seeded subset of the Fashion-MNIST test
split).

    python benchmarks/experiments/restore_tuned_grid.py RUN --steps 10 [--n 200] [--name NAME]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import diffusekit as dk
from diffusekit.data import load_data

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--name", default="restore_tuned_grid")
    a = p.parse_args()
    run = dk.load(a.run, device="cpu")
    test = load_data("fashion-mnist:test").x
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:a.n]
    images = ((test[idx].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    rows, per_image = [], {}
    for grid in ("karras", "tuned"):
        for mask in ("box:14", "random:0.7"):
            for method in ("repaint", "ddnm"):
                r = run.restore(images, "inpaint", truth=images, mask=mask, method=method, steps=a.steps, seed=1,
                                grid=grid)
                rows.append({"grid": grid, "mask": mask, "method": method, "psnr": round(r.psnr, 3),
                             "ssim": round(r.ssim, 4)})
                print(rows[-1], flush=True)
                mse = ((r.images.astype(np.float64) - images) / 255.0) ** 2
                per_image[grid, mask, method] = 10 * np.log10(1 / mse.reshape(a.n, -1).mean(1))
    for (grid, mask, method), v in per_image.items():  # paired: the same images, masks and seeds
        if grid == "tuned":
            d = v - per_image["karras", mask, method]
            rows.append({"tuned_minus_karras": {"mask": mask, "method": method, "psnr_db": round(float(d.mean()), 3),
                                                "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 3)}})
            print(rows[-1], flush=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"run": a.run, "steps": a.steps, "n": a.n, "rows": rows},
                                                       indent=1))


if __name__ == "__main__":
    main()
