"""Consistency distillation (distill) of a trained Fashion-MNIST run: FCD at 1, 2 and 4 network calls on held-out sampling
seeds against the teacher's best FCD, the distillation's time against the teacher's training time, and images per
second at each point against the teacher at 10 calls (its default sampling) and at the same calls (DPM-Solver++(2M)).

    python benchmarks/quality/bench_distill.py TEACHER --minutes 3.75 [--ct-target teacher|self] [--lr LR] [--ct-q 4]
                                              [--p-mean -1.1] [--bf16]
                                              [--calls 1 2 4]
                                              [--teacher-best benchmarks/results/tune_steps_15min.json] [--name NAME]

The distilled run goes to runs/distill/NAME (reused when it is there). --teacher-best: a tune-steps benchmark file of
the same teacher, whose best point on the same seed is the reference (else the teacher's 10-call default is).
Writes benchmarks/results/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import diffusekit as dk
from diffusekit.checkpoint import load_checkpoint
from diffusekit.evaluate import Evaluator
from diffusekit.train import DISTILL_SETTINGS

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teacher")
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--ct-target", choices=tuple(DISTILL_SETTINGS), default="teacher")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr-decay-frac", type=float, default=None)
    p.add_argument("--ct-q", type=float, default=None)
    p.add_argument("--p-mean", type=float, default=None, help="centre of ln t (default -1.1)")
    p.add_argument("--bf16", action="store_true", default=None)
    p.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--teacher-best", default=None)
    p.add_argument("--reference-data", default="fashion-mnist:test")
    p.add_argument("--name", default="distill")
    a = p.parse_args()
    out = Path("runs/distill") / a.name
    settings = {k: v for k, v in (("lr", a.lr), ("ct_q", a.ct_q), ("p_mean", a.p_mean), ("bf16", a.bf16),
                                 ("batch_size", a.batch_size), ("lr_decay_frac", a.lr_decay_frac)) if v is not None}
    t0 = time.time()
    student = dk.load(out, device="cpu") if (out / "last").exists() else \
        dk.distill(a.teacher, out, minutes=a.minutes, ct_target=a.ct_target, progress=False, **settings)
    distill_seconds = round(time.time() - t0, 1)
    teacher = dk.load(a.teacher, device="cpu")
    teacher_minutes = load_checkpoint(Path(a.teacher) / "last", stems=())[1]["elapsed"] / 60
    student_state = load_checkpoint(out / "last", stems=())[1]
    ev = Evaluator(a.reference_data, n_boot=10)
    points = []

    def point(run, label, **options):
        t0 = time.time()
        x = run.sample(a.n, seed=a.seed, batch_size=500, **options)
        seconds = time.time() - t0
        r = ev(x)
        points.append({"model": label, "sampling": run.sampling(**options), "fcd": r["fcd"], "fcd_se": r["fcd_se"],
                       "img_per_s": round(a.n / seconds, 1)})
        print(points[-1], flush=True)

    point(teacher, "teacher", steps=10)
    for calls in a.calls:
        point(student, "distilled", steps=calls)
        if calls > 1:  # the training-free baseline at the same calls: the teacher with a deterministic solver
            point(teacher, "teacher", steps=calls, sampler="dpmpp-2m")
    best = min(q["fcd"] for q in points if q["model"] == "teacher")
    if a.teacher_best:
        ref = json.loads(Path(a.teacher_best).read_text())
        best = min([best] + [q["fcd"] for q in ref["points"] if q["seed"] == a.seed])
    for q in points:
        q["ratio_to_teacher_best"] = round(q["fcd"] / best, 3)
    result = {"teacher": a.teacher, "teacher_minutes": round(teacher_minutes, 2), "distilled": str(out),
              "distill_minutes": round(student_state["elapsed"] / 60, 2), "distill_steps": student_state["step"],
              "distill_images": student_state["nimg"], "distill_wall_seconds": distill_seconds,
              "settings": {**DISTILL_SETTINGS[a.ct_target], **settings}, "teacher_best_fcd": best,
              "n_samples": a.n, "seed": a.seed, "points": points, "load_avg_end": list(os.getloadavg())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=1))


if __name__ == "__main__":
    main()
