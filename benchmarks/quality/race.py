"""The quality race on Fashion-MNIST: same wall-clock training budget, one system at a time, 1,000 samples each,
FCD / KID / precision / recall by our evaluator against the 10,000 test images.

    python benchmarks/quality/race.py --minutes 15 --systems diffusekit diffusers   # writes benchmarks/results/race_<M>min.json

Systems (all unconditional):
- diffusekit: our default recipe (`diffusekit train --data fashion-mnist --class-cond off`, plus the flags given
  with --ours-flags), sampled with dpmpp-2m-sde (the default sampler) and dpmpp-2m at 20 steps (20 network calls).
- diffusers: the recipe of diffusers' examples/unconditional_image_generation/train_unconditional.py -- UNet2DModel,
  DDPMScheduler (1000 steps, linear betas), eps-MSE, AdamW (lr 1e-4, betas 0.95/0.999, weight decay 1e-6), cosine
  schedule with 500 warm-up steps, EMAModel (inv_gamma 1, power 3/4, max decay 0.9999), batch 16 -- with the U-Net
  scaled to 28x28 and to about our parameter count; sampled with its DDIMScheduler (50 steps) and
  DPMSolverMultistepScheduler (20 steps).
- ddpm: denoising-diffusion-pytorch (lucidrains), its Trainer's defaults, DDIM 50 steps (benchmarks/quality/peer_ddpm.py).
  It needs torchvision, so it runs in its own virtual environment, built on first use in runs/venv-ddpm with
  `pip install torch==2.14.1 torchvision==0.29.1 denoising-diffusion-pytorch` (never mixed into ours).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent  # benchmarks/quality (peer_ddpm.py is beside this script)
RESULTS = ROOT.parent / "results"  # benchmarks/results
N_SAMPLES = 1000


def load_avg():
    return [round(v, 2) for v in os.getloadavg()]


def run_ours(minutes, out: Path, flags):
    out.mkdir(parents=True, exist_ok=True)
    run = out / "diffusekit-run"
    if not (run / "last").exists():
        cmd = [sys.executable, "-m", "diffusekit", "train", "--data", "fashion-mnist", "--out", str(run),
               "--minutes", str(minutes), "--class-cond", "off", "--no-progress", *flags]
        subprocess.run(cmd, check=True)
    results = {}
    for sampler, steps in (("dpmpp-2m-sde", 20), ("dpmpp-2m", 20)):  # the default, and the default until 2026-11-27
        path = out / f"diffusekit-{sampler}-{steps}.npz"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "diffusekit", "sample", str(run), "--n", str(N_SAMPLES), "--sampler",
                        sampler, "--steps", str(steps), "--seed", "0", "--out", str(path), "--no-progress"], check=True)
        results[f"diffusekit {sampler} {steps} NFE"] = {"npz": str(path), "sample_seconds": round(time.time() - t0, 1)}
    log = (run / "log.csv").read_text().strip().splitlines()
    last = dict(zip(log[0].split(","), log[-1].split(",")))
    return results, {"steps": int(last["step"]), "images_seen": int(last["nimg"]), "flags": flags}


def run_diffusers(minutes, out: Path):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from diffusekit.data import load_data

    torch.manual_seed(0)
    data = load_data("fashion-mnist").x  # [-1, 1], as their script normalizes
    model = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                        block_out_channels=(32, 64, 64), norm_num_groups=16,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    n_params = sum(p.numel() for p in model.parameters())
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    batch = 16
    g = torch.Generator().manual_seed(0)

    def step_fn():
        idx = torch.randint(0, len(data), (batch,), generator=g)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        ema.step(model.parameters())
        return float(loss)

    # the cosine schedule needs a total step count: estimate it from the first 30 steps' speed
    lr_sched = get_cosine_schedule_with_warmup(opt, 500, 10**9)
    t0 = time.time()
    for _ in range(30):
        step_fn()
    per_step = (time.time() - t0) / 30
    total = int(minutes * 60 / per_step)
    lr_sched = get_cosine_schedule_with_warmup(opt, 500, total)
    for _ in range(30):
        lr_sched.step()
    steps = 30
    while time.time() - t0 < minutes * 60:
        step_fn()
        steps += 1
    ema.copy_to(model.parameters())
    model.eval()
    results = {}
    for name, scheduler, n_steps in (("DDIM", DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear"), 50),
                                     ("DPMSolver++", DPMSolverMultistepScheduler(num_train_timesteps=1000,
                                                                                 beta_schedule="linear"), 20)):
        t1 = time.time()
        gen = torch.Generator().manual_seed(0)
        imgs = []
        with torch.no_grad():
            for i in range(0, N_SAMPLES, 250):
                scheduler.set_timesteps(n_steps)
                x = torch.randn((min(250, N_SAMPLES - i), 1, 28, 28), generator=gen) * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    x = scheduler.step(model(x, t).sample, t, x).prev_sample
                imgs.append(x)
        x = torch.cat(imgs)
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        path = out / f"diffusers-{name}-{n_steps}.npz"
        np.savez(path, arr_0=u8)
        results[f"diffusers {name} {n_steps} NFE"] = {"npz": str(path), "sample_seconds": round(time.time() - t1, 1)}
    return results, {"steps": steps, "images_seen": steps * batch, "params": n_params}


def run_ddpm(minutes, out: Path):
    from diffusekit.data import load_data

    out.mkdir(parents=True, exist_ok=True)
    venv = Path("runs/venv-ddpm")
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.14.1", "torchvision==0.29.1",
                        "denoising-diffusion-pytorch"], check=True)
    d = load_data("fashion-mnist")
    train = out / "ddpm-train.npy"
    np.save(train, d.codec.decode(d.x)[..., 0])  # uint8 N x 28 x 28
    path = out / "ddpm-DDIM-50.npz"
    r = subprocess.run([str(python), str(ROOT / "peer_ddpm.py"), str(minutes), str(train), str(path), str(N_SAMPLES)],
                       check=True, stdout=subprocess.PIPE, text=True)  # its stderr (progress, errors) shows
    info = json.loads(r.stdout.strip().splitlines()[-1])
    return ({"denoising-diffusion-pytorch DDIM 50 NFE": {"npz": str(path), "sample_seconds": info.pop("sample_seconds")}},
            info)


def main():
    global N_SAMPLES
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--systems", nargs="+", default=["diffusekit", "diffusers"], choices=["diffusekit", "diffusers", "ddpm"])
    p.add_argument("--ours-flags", default="", help="extra diffusekit train flags, e.g. '--bf16'")
    p.add_argument("--out", default="runs/race")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--label", default="", help="suffix for our result names (ablations), e.g. 'fp32'")
    a = p.parse_args()
    N_SAMPLES = a.n_samples
    out = Path(a.out) / f"{a.minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    res_path = RESULTS / f"race_{a.minutes:g}min.json"
    report = json.loads(res_path.read_text()) if res_path.exists() else {}
    from diffusekit.evaluate import Evaluator

    ev = Evaluator("fashion-mnist:test", n_boot=20)
    for system in a.systems:
        before = load_avg()
        if system == "diffusekit":
            samples, info = run_ours(a.minutes, out / a.label if a.label else out, a.ours_flags.split())
            if a.label:
                samples = {f"{k} [{a.label}]": v for k, v in samples.items()}
        elif system == "ddpm":
            samples, info = run_ddpm(a.minutes, out)
        else:
            samples, info = run_diffusers(a.minutes, out)
        for name, s in samples.items():
            r = ev(s["npz"])
            report[name] = {**{k: r[k] for k in ("fcd", "fcd_se", "kid", "precision", "recall", "n_samples")},
                            **s, **info, "load_before": before, "load_after": load_avg()}
            print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in report[name].items()}, flush=True)
        res_path.parent.mkdir(exist_ok=True)
        res_path.write_text(json.dumps(report, indent=2))
    best_peer = min((v["fcd"] for k, v in report.items() if not k.startswith("diffusekit")), default=math.nan)
    for k, v in report.items():
        print(f"| {k} | {v['fcd']:.3f} +- {v['fcd_se']:.3f} | {v['kid']:.4f} | {v['precision']:.3f} | {v['recall']:.3f} |"
              f" {v['images_seen']} | ratio to best peer {v['fcd'] / best_peer:.3f} |")


if __name__ == "__main__":
    main()
