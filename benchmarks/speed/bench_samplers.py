"""Sampler speed. Run: ``python benchmarks/speed/bench_samplers.py`` (about 4 minutes on 2 CPU cores).

(a) Overhead: for every sampler in ``SAMPLERS``, the time to draw a batch divided by (NFE x the time of one
    denoiser call on the same batch). A plain-function sampler should cost no more than its network calls:
    goal <= 1.05. The call time is measured inside each sampling run (a wrapper times every call, and
    NFE x one call is their sum), so load from other processes moves numerator and denominator together and
    the ratio is exactly (network time + everything else) / network time.
(b) Against diffusers: the same UNet2DModel, timesteps and starting noise through our ``ddim`` / ``dpmpp-2m``
    (sigma space, ``precond.from_diffusers``) and through diffusers' DDIMScheduler / DPMSolverMultistepScheduler
    loops (VP space). Reports the largest difference between the final images, the time ratio ours/theirs
    (runs interleaved, median) and, robust to load, each loop's time outside the U-Net per step (the U-Net
    is timed inside both loops). Goal: same images, ratio <= 1.0.

Prints a markdown table and writes benchmarks/results/samplers.json (with the load average before and after:
timings on a shared machine are only as good as its load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from diffusekit import precond, runtime, samplers, schedules
from diffusekit.model import ModelConfig, build_denoiser

RESULTS = Path(__file__).resolve().parent.parent / "results" / "samplers.json"  # benchmarks/results


def load_average():
    try:
        return {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                "loadavg": list(os.getloadavg())}
    except OSError:
        return {"uptime": None, "loadavg": list(os.getloadavg())}


class TimedDenoiser:
    """Counts network calls (NFE) and times each one."""

    def __init__(self, denoiser):
        self.denoiser, self.times = denoiser, []

    def __call__(self, x, sigma, class_labels=None):
        t0 = time.perf_counter()
        out = self.denoiser(x, sigma, class_labels)
        self.times.append(time.perf_counter() - t0)
        return out


class TimedUNet(torch.nn.Module):
    """A UNet2DModel that records the time of each call (the network time inside either loop)."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.times = unet, []

    def forward(self, x, t, class_labels=None):
        t0 = time.perf_counter()
        out = self.unet(x, t, class_labels=class_labels)
        self.times.append(time.perf_counter() - t0)
        return out


def bench_overhead(batch, steps, repeats):
    """(a) sampling time / (NFE x one denoiser call) for every sampler, on a diffusekit 'small' U-Net."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="image", in_shape=[1, 28, 28], preset="small")
    D = build_denoiser(cfg).eval()
    sigmas = schedules.sigma_grid(cfg, steps)
    shape, seeds = (batch, *cfg.in_shape), runtime.sample_seeds(0, batch)
    with torch.no_grad():
        x, s = torch.randn(shape), torch.full((batch,), 1.0)
        for _ in range(2):  # warm-up
            D(x, s)
        isolated = []
        for _ in range(5):
            t0 = time.perf_counter()
            D(x, s)
            isolated.append(time.perf_counter() - t0)
    t_isolated = statistics.median(isolated)
    rows = []
    for name in samplers.SAMPLERS:
        ratios, totals, calls, nfes = [], [], [], set()
        for _ in range(repeats):
            timed = TimedDenoiser(D)
            with torch.no_grad():
                t0 = time.perf_counter()
                samplers.generate(timed, name, shape, sigmas, seeds=seeds)
                total = time.perf_counter() - t0
            nfe, t_call = len(timed.times), statistics.mean(timed.times)  # NFE x t_call = sum of call times
            nfes.add(nfe)
            totals.append(total)
            calls.append(t_call)
            ratios.append(total / (nfe * t_call))
        assert len(nfes) == 1, f"{name}: NFE changed between runs: {nfes}"
        rows.append({"sampler": name, "steps": steps, "batch": batch, "nfe": nfes.pop(),
                     "sample_s": statistics.median(totals), "call_ms": 1e3 * statistics.median(calls),
                     "overhead_ratio": statistics.median(ratios), "ratios": ratios})
        print(f"  {name}: nfe {rows[-1]['nfe']}, ratio {rows[-1]['overhead_ratio']:.4f}", flush=True)
    return {"model": "diffusekit U-Net preset 'small', 1x28x28", "isolated_call_ms": 1e3 * t_isolated,
            "rows": rows}


def bench_vs_diffusers(batch, repeats):
    """(b) our ddim / dpmpp-2m vs diffusers' DDIM / DPM-Solver++ loops on one random UNet2DModel."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = TimedUNet(UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)).eval()
    x_T = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cases = [
        ("ddim", 50, DDIMScheduler(clip_sample=False, set_alpha_to_one=True), samplers.sample_ddim, {"eta": 0.0}),
        ("dpmpp-2m", 20, DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
                                                     final_sigmas_type="zero", lower_order_final=True),
         samplers.sample_dpmpp_2m, {}),
    ]
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(3):
            unet(x_T, 500)
        call_ms = 1e3 * (time.perf_counter() - t0) / 3
    rows = []
    for name, n, scheduler, sampler, knobs in cases:
        D = precond.from_diffusers(unet, scheduler)

        def theirs():
            scheduler.set_timesteps(n)
            x = x_T * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t).sample, t, x, **knobs).prev_sample
            return x

        def ours():  # same timesteps (scheduler.timesteps), same x_T mapped to sigma space
            sigmas = schedules.timestep_sigmas(scheduler.alphas_cumprod, scheduler.timesteps)
            x = x_T / float(scheduler.alphas_cumprod[scheduler.timesteps[0]]) ** 0.5
            return sampler(D, x, sigmas, **knobs)

        t_ours, t_theirs, o_ours, o_theirs = [], [], [], []
        with torch.no_grad():
            img_theirs, img_ours = theirs(), ours()  # also the warm-up
            for _ in range(repeats):  # interleaved: ours, theirs, ours, theirs, ...
                for fn, ts, os_ in ((ours, t_ours, o_ours), (theirs, t_theirs, o_theirs)):
                    unet.times = []
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                    assert len(unet.times) == n
                    os_.append((ts[-1] - sum(unet.times)) / n)  # time outside the U-Net, per step
        diff = float((img_ours - img_theirs).abs().max())
        scale = float(img_theirs.abs().max())
        rows.append({"sampler": name, "steps": n, "batch": batch, "max_abs_diff": diff, "max_abs_image": scale,
                     "rel_diff": diff / scale, "ours_s": statistics.median(t_ours),
                     "diffusers_s": statistics.median(t_theirs),
                     "time_ratio": statistics.median(a / b for a, b in zip(t_ours, t_theirs)),
                     "ours_loop_ms_per_step": 1e3 * statistics.median(o_ours),
                     "diffusers_loop_ms_per_step": 1e3 * statistics.median(o_theirs),
                     "ours_all_s": t_ours, "diffusers_all_s": t_theirs})
        print(f"  {name}: max|diff| {diff:.2e}, ratio {rows[-1]['time_ratio']:.4f}, outside the U-Net "
              f"{rows[-1]['ours_loop_ms_per_step']:.3f} vs {rows[-1]['diffusers_loop_ms_per_step']:.3f} ms/step",
              flush=True)
    return {"model": "random diffusers UNet2DModel, 3x32x32, block_out_channels (16, 32)", "call_ms": call_ms,
            "rows": rows}


def table(res):
    a, b = res["overhead"], res["vs_diffusers"]
    out = [f"### (a) sampler overhead: time / (NFE x one call); {a['model']}, goal <= 1.05", "",
           "| sampler | steps | batch | NFE | sample (s) | one call (ms) | ratio |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['sampler']} | {r['steps']} | {r['batch']} | {r['nfe']} | {r['sample_s']:.2f} | "
            f"{r['call_ms']:.1f} | {r['overhead_ratio']:.4f} |" for r in a["rows"]]
    out += ["", f"### (b) ours vs diffusers' scheduler loop; {b['model']} ({b['call_ms']:.0f} ms per call)", "",
            "| sampler | steps | batch | max abs diff | (relative) | ours (s) | diffusers (s) | ours/diffusers "
            "| outside U-Net, ms/step: ours | diffusers |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['sampler']} | {r['steps']} | {r['batch']} | {r['max_abs_diff']:.2e} | {r['rel_diff']:.1e} | "
            f"{r['ours_s']:.3f} | {r['diffusers_s']:.3f} | {r['time_ratio']:.4f} | {r['ours_loop_ms_per_step']:.3f} "
            f"| {r['diffusers_loop_ms_per_step']:.3f} |" for r in b["rows"]]
    out += ["", "(untrained U-Net: its samples are not images in [-1, 1] but reach |x| ~ 10^2-10^3, hence "
            "'relative' = max abs diff / max abs value)"]
    out += ["", f"threads {res['threads']}; load before: {res['load_before']['uptime']}; "
            f"after: {res['load_after']['uptime']}"]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared 2-core machine more threads make "
                        "timings erratic, up to 100x slower under contention)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per sampler in (a) (median)")
    p.add_argument("--repeats-diffusers", type=int, default=7, help="interleaved timed runs per side in (b)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffusers

    res = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": torch.get_num_threads(),
           "load_before": load_average()}
    t0 = time.perf_counter()
    print("(a) sampler overhead", flush=True)
    res["overhead"] = bench_overhead(batch=64, steps=20, repeats=args.repeats)
    print("(b) vs diffusers", flush=True)
    res["vs_diffusers"] = bench_vs_diffusers(batch=16, repeats=args.repeats_diffusers)
    res["load_after"] = load_average()
    res["wall_s"] = time.perf_counter() - t0
    print()
    print(table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out} ({res['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
