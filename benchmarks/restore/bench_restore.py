"""Restoration figures (issue 5): our methods against the classical tools, on the same degraded images.

    python benchmarks/restore/bench_restore.py RUN [--n 500] [--tasks inpaint-box ...] [--quick]

RUN is a trained Fashion-MNIST run (the default recipe). The test images are a seeded random subset (seed 0) of
the Fashion-MNIST test split; the degradations are made with diffusekit's own operators in [0, 1] image units:
- inpaint-box: the centre 14x14 box missing; inpaint-random: 70% of the pixels missing (a different mask per image);
- sr2 / sr4: 2x2 / 4x4 average pooling;
- denoise-0.1 / denoise-0.2: additive Gaussian noise (unclipped);
- deblur: Gaussian blur, sigma 1.5 (periodic boundary), plus Gaussian noise of sigma 0.01.
Classical baselines: scikit-image biharmonic inpainting, OpenCV Telea and Navier-Stokes inpainting; bicubic and
Lanczos up-sampling (Pillow); non-local means and TV (scikit-image) and BM3D (the `bm3d` package, benchmark only);
Richardson-Lucy and Wiener (scikit-image). Their one free parameter (NLM h, TV weight, RL iterations, Wiener
balance) is chosen by PSNR on 50 *other* test images, never on the scored ones.
Figures: PSNR and SSIM against the truth (mean and standard error over images), Frechet classifier distance (FCD)
of the restorations against the Fashion-MNIST training split (our classifier's features), and seconds per image on
this machine. Writes benchmarks/results/restore.json and a figure per task in benchmarks/results/restore_*.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from diffusekit import load
from diffusekit.data import load_data
from diffusekit.evaluate import Evaluator
from diffusekit.inverse import AvgPool, Identity, Mask, RestoreConfig, parse_kernel, parse_mask, restore
from diffusekit.metrics import psnr, ssim
from diffusekit.precond import unconditional
from diffusekit.viz import image_grid

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results
TASKS = ("inpaint-box", "inpaint-random", "sr2", "sr4", "denoise-0.1", "denoise-0.2", "deblur")


def degrade(task, x01, seed=0):
    """(operator, measurement in [0, 1] units, noise sigma in [0, 1] units) for images x01 [N, 1, 28, 28]."""
    g = torch.Generator().manual_seed(seed + 1)
    n, size = len(x01), x01.shape[-1]
    if task == "inpaint-box":
        op, s = Mask(parse_mask("box:14", n, size)), 0.0
    elif task == "inpaint-random":
        op, s = Mask(parse_mask("random:0.7", n, size, seed)), 0.0
    elif task.startswith("sr"):
        op, s = AvgPool(int(task[2:])), 0.0
    elif task.startswith("denoise"):
        op, s = Identity(), float(task.split("-")[1])
    else:
        op, s = parse_kernel("gaussian:1.5", size), 0.01
    y = op.A(x01)
    return op, y + s * torch.randn(y.shape, generator=g), s


# ---------------------------------------------------------------------------------------------------------
# Classical baselines: functions (y [N, 1, h, w] in [0, 1] units, op, sigma, param) -> x [N, 1, H, W]


def _each(y, fn):
    return torch.stack([torch.as_tensor(np.asarray(fn(im[0].double().numpy())), dtype=torch.float32)[None] for im in y])


def biharmonic(y, op, s, p):
    from skimage.restoration import inpaint_biharmonic

    return torch.stack([torch.as_tensor(inpaint_biharmonic(y[i, 0].numpy(), (op.mask[min(i, len(op.mask) - 1), 0] == 0).numpy()),
                                        dtype=torch.float32)[None] for i in range(len(y))])


def opencv(flag):
    def run(y, op, s, p):
        import cv2

        out = []
        for i in range(len(y)):
            im = (y[i, 0].clamp(0, 1) * 255).round().byte().numpy()
            hole = (op.mask[min(i, len(op.mask) - 1), 0] == 0).numpy().astype(np.uint8)
            out.append(torch.as_tensor(cv2.inpaint(im, hole, 3, getattr(cv2, flag)) / 255.0, dtype=torch.float32)[None])
        return torch.stack(out)
    return run


def resize(mode):
    def run(y, op, s, p):
        from PIL import Image

        size = y.shape[-1] * op.f
        return _each(y, lambda im: np.asarray(Image.fromarray(im.astype(np.float32), mode="F").resize(
            (size, size), getattr(Image.Resampling, mode))))
    return run


def nlm(y, op, s, h):
    from skimage.restoration import denoise_nl_means

    return _each(y, lambda im: denoise_nl_means(im, h=h * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True))


def tv(y, op, s, w):
    from skimage.restoration import denoise_tv_chambolle

    return _each(y, lambda im: denoise_tv_chambolle(im, weight=w))


def bm3d_(y, op, s, p):
    import bm3d

    return _each(y, lambda im: bm3d.bm3d(im, sigma_psd=s))


def _kernel():
    from diffusekit.inverse import gaussian_kernel

    return gaussian_kernel(1.5, 13).numpy()


def richardson_lucy(y, op, s, iters):
    from skimage.restoration import richardson_lucy as rl

    k = _kernel()
    return _each(y, lambda im: rl(np.clip(im, 0, 1), k, num_iter=int(iters), clip=True))


def wiener(y, op, s, balance):
    from skimage.restoration import wiener as w

    k = _kernel()
    return _each(y, lambda im: w(im, k, balance, clip=True))


BASELINES = {  # task prefix -> {name: (function, candidate parameters or None)}
    "inpaint": {"biharmonic (scikit-image)": (biharmonic, None), "Telea (OpenCV)": (opencv("INPAINT_TELEA"), None),
                "Navier-Stokes (OpenCV)": (opencv("INPAINT_NS"), None)},
    "sr": {"bicubic": (resize("BICUBIC"), None), "Lanczos": (resize("LANCZOS"), None)},
    "denoise": {"non-local means": (nlm, (0.6, 0.8, 1.0, 1.2)), "TV (Chambolle)": (tv, (0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3)),
                "BM3D": (bm3d_, None)},
    "deblur": {"Richardson-Lucy": (richardson_lucy, (5, 10, 20, 30, 50)),
               "Wiener": (wiener, (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1))},
}


# ---------------------------------------------------------------------------------------------------------


def ours(task):
    """Our variants per task: name -> RestoreConfig options (only those that apply to the method)."""
    if task.startswith("denoise"):
        return {"Tweedie (posterior mean, 1 call)": dict(method="tweedie"),
                "posterior sample (DDPM, 20 steps)": dict(method="sample", sampler="ddpm", steps=20)}
    v = {"DDNM (DPM++ 2M, 20 steps)": dict(method="ddnm", sampler="dpmpp-2m", steps=20),
         "DDNM, mean of 4 samples (4 x 20 steps)": dict(method="ddnm", sampler="dpmpp-2m", steps=20, n_samples=4)}
    if task.startswith(("inpaint", "sr", "deblur")):
        v["RePaint (DDPM, 20 steps x 4 resamplings)"] = dict(method="repaint", sampler="ddpm", steps=20, resample=4)
    return v


def score(x, truth, ev):
    x = x.clamp(0, 1)
    p, s = psnr(x.permute(0, 2, 3, 1), truth.permute(0, 2, 3, 1)), ssim(x.permute(0, 2, 3, 1), truth.permute(0, 2, 3, 1))
    q = ev((x.permute(0, 2, 3, 1) * 255).round().byte().numpy())
    se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
    return {"psnr": float(p.mean()), "psnr_se": se(p), "ssim": float(s.mean()), "ssim_se": se(s),
            "fcd": q["fcd"], "fcd_se": q["fcd_se"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--only", nargs="+", default=None, help="run only the methods whose names start with these")
    p.add_argument("--out", default=str(RESULTS / "restore.json"))
    a = p.parse_args()
    torch.manual_seed(0)
    run = load(a.run, device="cpu")
    D, m = unconditional(run.denoiser, run.model_config), run.model_config
    data = load_data("fashion-mnist:test")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    truth = (data.x[perm[:a.n]] + 1) / 2  # [N, 1, 28, 28] in [0, 1]
    val = (data.x[perm[a.n:a.n + 50]] + 1) / 2  # for the baselines' parameter choice only
    ev = Evaluator("fashion-mnist", n_boot=20)
    report = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    report.update({"run": a.run, "n": a.n, "load_before": os.getloadavg()})
    for task in a.tasks:
        op, y, s = degrade(task, truth)
        rows, shown = {}, {"truth": truth[:8], "degraded": (op.pinv(y) if task.startswith("sr") else y)[:8]}
        for name, kw in ours(task).items():
            if a.only and not name.startswith(tuple(a.only)):
                continue
            t0 = time.time()
            k = kw.get("n_samples", 1)
            # model space: y = A(2 x - 1) + 2 noise (A(2x - 1) = 2 A(x) - 1 only for operators that keep constants)
            y_model = op.A(2 * truth - 1) + 2 * (y - op.A(truth))
            x = restore(D, m, op, y_model, RestoreConfig.from_options(batch_size=max(64, 64 * k), **kw),
                        sigma_y=2 * s)
            x = ((x.view(a.n, k, *x.shape[1:]).mean(1) + 1) / 2)
            rows[name] = {**score(x, truth, ev), "seconds_per_image": (time.time() - t0) / a.n, "ours": True}
            shown[name] = x[:8]
            print(task, name, json.dumps(rows[name]), flush=True)
        for name, (fn, grid) in BASELINES[task.split("-")[0].rstrip("24")].items():
            if a.only and not name.startswith(tuple(a.only)):
                continue
            param = None
            if grid:
                vop, vy, _ = degrade(task, val, seed=1)
                param = max(grid, key=lambda q: float(psnr(fn(vy, vop, s, q).clamp(0, 1).permute(0, 2, 3, 1),
                                                           val.permute(0, 2, 3, 1)).mean()))
            t0 = time.time()
            x = fn(y, op, s, param)
            rows[name] = {**score(x, truth, ev), "seconds_per_image": (time.time() - t0) / a.n, "param": param}
            shown[name] = x[:8]
            print(task, name, json.dumps(rows[name]), flush=True)
        report[task] = {**report.get(task, {}), **rows}
        grid_rows = torch.cat([v.clamp(0, 1) for v in shown.values()])
        image_grid((grid_rows.permute(0, 2, 3, 1) * 255).round().byte().numpy(), nrow=8, scale=2).save(
            RESULTS / f"restore_{task}{'_' + '_'.join(a.only) if a.only else ''}.png".replace(" ", "-"))
        report[task + " figure rows" + (" " + " ".join(a.only) if a.only else "")] = list(shown)
        report["load_after"] = os.getloadavg()
        Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
