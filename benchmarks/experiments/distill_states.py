"""Which of the teacher path's states `distill` should teach, and with what weight: the library's distillation with
TeacherPathLoss narrowed to some of the path's states (more paths per batch: the teacher's solve costs more per
sample) and / or weighted per state, then FCD at 1 and 2 calls (consistency steps and DDIM steps).

    python benchmarks/experiments/distill_states.py TEACHER --minutes 3.75 [--keep 0 1 2 3 4 5 6 7]
        [--weights 1 1 1 1 1 1 1 1] [--own 2.5] [--levels 0.821 2.5] [--lr LR] [--batch-size B] [--name NAME]

--keep: indices of the path's states taught (0 is pure noise at sigma_max); --weights: one per kept state.
--own: levels s where the student also learns the path's end from its own first jump re-entered by DDIM's step,
x_s = D(x_T) + s (x_T - D(x_T)) / sigma_max (the state its 2-call DDIM sampling sees).
--levels: the 2-call grids' middle levels to evaluate. Writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import diffusekit as dk
from diffusekit import losses, samplers
from diffusekit.checkpoint import load_checkpoint
from diffusekit.evaluate import Evaluator

RESULTS = Path(__file__).resolve().parent.parent / "results"


def narrowed(keep, weights, own):
    """own: levels at which the student also learns from the state its own DDIM step from sigma_max reaches."""
    def loss(self, denoiser, x0, labels=None, sigma=None, eps=None, generator=None, augment_labels=None):
        n, k = len(x0), len(keep) + len(own)
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator)
        m = -(-n // k)
        path_labels = None if labels is None else labels[:m]
        with torch.no_grad():
            states, levels, end = self.path(eps[:m].to(x0.device), path_labels)
            top = float(levels[0][0])  # the path starts at pure noise, sigma_max
            states, levels = [states[i] for i in keep], [levels[i] for i in keep]
            if own:
                x_T = eps[:m].to(x0.device) * top
                jump = denoiser(x_T, torch.full((m,), top), path_labels).float()
            for s in own:
                states.append(jump + s * (x_T - jump) / top)
                levels.append(torch.full((m,), s))
        take = lambda t: torch.stack(t, 1).flatten(0, 1)[:n]
        x, t = take(states), take(levels)
        target = end.float().repeat_interleave(k, 0)[:n]
        lab = None if labels is None else path_labels.repeat_interleave(k, 0)[:n]
        w = torch.tensor(weights + [1.0] * len(own), dtype=torch.float32, device=x0.device).repeat(m)[:n]
        return w * ((denoiser(x, t, lab).float() - target) ** 2).flatten(1).mean(1)
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teacher")
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--keep", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--weights", type=float, nargs="+", default=None)
    p.add_argument("--levels", type=float, nargs="+", default=[0.821])
    p.add_argument("--own", type=float, nargs="*", default=[], help="levels of the student's own first DDIM step")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reference-data", default="fashion-mnist:test")
    p.add_argument("--name", required=True)
    a = p.parse_args()
    samplers.CONSISTENCY_SAMPLING.pop("sigma_min")  # the grids here are given whole (run.grids)
    weights = a.weights or [1.0] * len(a.keep)
    assert len(weights) == len(a.keep)
    losses.TeacherPathLoss.__call__ = narrowed(a.keep, weights, a.own)
    settings = {k: v for k, v in (("lr", a.lr), ("batch_size", a.batch_size)) if v is not None}
    out = Path("runs/distill") / a.name
    t0 = time.time()
    student = dk.load(out, device="cpu") if (out / "last").exists() else \
        dk.distill(a.teacher, out, minutes=a.minutes, progress=False, **settings)
    seconds = time.time() - t0
    state = load_checkpoint(out / "last", stems=())[1]
    ev = Evaluator(a.reference_data, n_boot=10)
    smax = student.model_config.sigma_max
    points = []
    for grid, sampler in [([smax, 0.0], "consistency")] + [([smax, s, 0.0], m) for s in a.levels
                                                           for m in ("consistency", "ddim")]:
        student.grids = {len(grid) - 1: grid}
        r = ev(student.sample(a.n, seed=a.seed, batch_size=500, steps=len(grid) - 1, grid="tuned", sampler=sampler))
        points.append({"grid": grid, "sampler": sampler, "fcd": r["fcd"], "fcd_se": r["fcd_se"]})
        print(points[-1], flush=True)
    result = {"teacher": a.teacher, "keep": a.keep, "weights": weights, "settings": settings, "steps": state["step"],
              "minutes": round(state["elapsed"] / 60, 2), "wall_seconds": round(seconds, 1), "seed": a.seed,
              "n": a.n, "points": points}
    (RESULTS / f"{a.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
