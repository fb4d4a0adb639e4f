"""Prototype: distil a run into a consistency model by regressing the clean end of the teacher's probability-flow ODE
(a few-step deterministic solve from pure noise) at every state of its path, instead of ECT's self-consistency.

    python benchmarks/experiments/trajectory_distill.py TEACHER --minutes 3.75 [--lr 1e-4] [--teacher-steps 8]
        [--calls 1 2 4] [--name NAME]

Writes benchmarks/results/NAME.json (FCD at each number of calls, 1,000 samples, seed 1).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import diffusekit as dk
from diffusekit.evaluate import Evaluator
from diffusekit.samplers import sample_consistency, sample_sa_solver
from diffusekit.schedules import sigma_grid

RESULTS = Path(__file__).resolve().parent.parent / "results"


def teacher_paths(teacher, m, k, grid, bf16, g):
    """m ODE paths from pure noise: states (m*len(grid)-1, ...), their levels, and each state's clean end."""
    shape = (m, *teacher_shape)
    x = grid[0] * torch.randn(shape, generator=g)
    states, levels = [], []

    def keep(info):
        states.append(info["x"].float())
        levels.append(torch.full((m,), float(info["sigma"])))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        end = sample_sa_solver(teacher, x, grid, eta=0.0, callback=keep).float()
    k = len(states)
    return torch.cat(states), torch.cat(levels), end.repeat(k, *([1] * (end.ndim - 1)))


def main():
    global teacher_shape
    p = argparse.ArgumentParser()
    p.add_argument("teacher")
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--teacher-steps", type=int, default=8)
    p.add_argument("--sigma-min", type=float, default=0.2)
    p.add_argument("--rho", type=float, default=10.0)
    p.add_argument("--top-weight", type=float, default=1.0, help="extra weight of the states at sigma_max")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay per step (0: none)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--huber", action="store_true")
    p.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--name", default="traj")
    a = p.parse_args()
    bf16 = not a.no_bf16
    run = dk.load(a.teacher, device="cpu")
    teacher = run.denoiser.eval().requires_grad_(False)
    teacher_shape = tuple(run.model_config.in_shape)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    ema = copy.deepcopy(student).eval().requires_grad_(False) if a.ema else None
    opt = torch.optim.Adam(student.parameters(), lr=a.lr)
    grid = sigma_grid(run.model_config, a.teacher_steps, rho=a.rho, sigma_min=a.sigma_min).float()
    k = a.teacher_steps
    m = max(1, a.batch // k)
    g = torch.Generator().manual_seed(12345)
    t0, step, log = time.time(), 0, []
    while time.time() - t0 < a.minutes * 60:
        x, s, target = teacher_paths(teacher, m, k, grid, bf16, g)
        w = torch.where(s == grid[0], a.top_weight, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = student(x, s)
        err = ((out.float() - target) ** 2).flatten(1).mean(1)
        if a.huber:  # pseudo-Huber on the per-sample norm (iCT): c = 0.00054 sqrt(d)
            d = err.new_tensor(float(target[0].numel()))
            c = 0.00054 * d.sqrt()
            err = (err * d + c**2).sqrt() - c
        loss = (w * err).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for pe, ps in zip(ema.parameters(), student.parameters()):
                    pe.lerp_(ps, 1 - a.ema)
        step += 1
        if step % 20 == 0:
            top = err[s == grid[0]].mean().item()
            log.append({"step": step, "seconds": round(time.time() - t0, 1), "loss": loss.item(), "top": top})
            print(log[-1], flush=True)
    seconds = time.time() - t0
    final = (ema if ema is not None else student).eval()
    ev = Evaluator("fashion-mnist:test", n_boot=10)
    points = []
    for calls in a.calls:
        sig = sigma_grid(run.model_config, calls, sigma_min=0.821)
        t1 = time.time()
        xs = []
        gen = torch.Generator().manual_seed(a.seed)
        with torch.no_grad():
            for i in range(0, a.n, 500):
                z = torch.randn((min(500, a.n - i), *teacher_shape), generator=gen)
                xs.append(sample_consistency(final, z * sig[0], sig, generator=gen))
        x = torch.cat(xs)
        r = ev(run.codec.decode(x))
        points.append({"calls": calls, "grid": [round(float(v), 3) for v in sig], "fcd": r["fcd"], "fcd_se": r["fcd_se"],
                       "img_per_s": round(a.n / (time.time() - t1), 1)})
        print(points[-1], flush=True)
    out = {"teacher": a.teacher, "settings": vars(a), "steps": step, "seconds": round(seconds, 1),
           "trajectories": step * m, "points": points, "log": log}
    (RESULTS / f"{a.name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
