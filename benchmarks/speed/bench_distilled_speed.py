"""Images per second of a distilled run at 1 and 2 calls, its teacher at its 10-call default, and diffusers' pipeline
(the race's UNet2DModel with DPMSolverMultistepScheduler, 20 steps) in one process, one after the other.

    python benchmarks/speed/bench_distilled_speed.py DISTILLED TEACHER [--n 1000] [--name distilled_speed]

Speed does not depend on the weights, so diffusers' network is built with the race's architecture
(benchmarks/quality/race.py) and fresh weights; its FCD is the race's (race_<M>min.json). Writes
benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import diffusekit as dk

RESULTS = Path(__file__).resolve().parent.parent / "results"


def diffusers_pipeline(n: int, steps: int = 20, batch: int = 250) -> float:
    """Seconds for n samples, as race.py samples its diffusers model."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                        block_out_channels=(32, 64, 64), norm_num_groups=16,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")).eval()
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear")
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, n, batch):
            scheduler.set_timesteps(steps)
            x = torch.randn((min(batch, n - i), 1, 28, 28), generator=gen) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                x = scheduler.step(model(x, t).sample, t, x).prev_sample
    return time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("distilled")
    p.add_argument("teacher")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--name", default="distilled_speed")
    a = p.parse_args()
    rows = []

    def timed(label, seconds):
        rows.append({"system": label, "img_per_s": round(a.n / seconds, 1), "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)

    student, teacher = dk.load(a.distilled, device="cpu"), dk.load(a.teacher, device="cpu")
    for calls in (1, 2):
        t0 = time.time()
        student.sample(a.n, steps=calls, seed=1, batch_size=500)
        timed(f"distilled, {calls} call(s)", time.time() - t0)
    t0 = time.time()
    teacher.sample(a.n, steps=10, seed=1, batch_size=500)
    timed("teacher, 10-call default", time.time() - t0)
    timed("diffusers pipeline, DPMSolver++ 20 steps", diffusers_pipeline(a.n))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"distilled": a.distilled, "teacher": a.teacher, "n": a.n,
                                                        "rows": rows, "load_avg_end": list(os.getloadavg())}, indent=1))


if __name__ == "__main__":
    main()
