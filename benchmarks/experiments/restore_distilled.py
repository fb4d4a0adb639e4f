"""Restoring with a distilled (consistency) run against its teacher: PSNR / SSIM of RePaint and DDNM inpaintings (70%
of the pixels missing) of 100 Fashion-MNIST test images. A record of why `restore` refuses consistency models now:
it runs only at a commit before that refusal (b2d7327..baaeae6 of issue 28).

    python benchmarks/experiments/restore_distilled.py
"""
import numpy as np, torch, diffusekit as dk
from diffusekit.data import load_data
test = load_data("fashion-mnist:test").x
idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:100]
images = ((test[idx].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
t = dk.load("runs/race/15min/recipe/diffusekit-run", device="cpu")
s = dk.load("runs/distill/distill_15min_recipe_teacher", device="cpu")
for name, run, opts in (("teacher repaint ddpm 10 (tuned)", t, dict(steps=10)),
                        ("student repaint ddpm 10", s, dict(steps=10)),
                        ("student repaint consistency 2", s, dict(steps=2, sampler="consistency")),
                        ("student repaint consistency 4", s, dict(steps=4, sampler="consistency")),
                        ("student ddnm consistency 4", s, dict(steps=4, sampler="consistency", method="ddnm")),):
    r = run.restore(images, "inpaint", truth=images, mask="random:0.7", seed=1, **opts)
    print(name, round(r.psnr, 2), round(r.ssim, 3), round(r.seconds, 1), r.grid, flush=True)
