"""Training throughput (samples/s) of the presets, by default on Fashion-MNIST-shaped batches, fp32 and bf16.

    python benchmarks/speed/bench_train.py [--presets small base] [--steps 20] [--data toy:gmm8 --precisions fp32]

Runs the real Trainer.train_step (loss, backward, clipping, AdamW, EMA) on 28x28 data (or any --data spec);
reports the median of timed steps after warm-up, and the machine load. Writes --json
(benchmarks/results/train_throughput.json).
"""
import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from diffusekit.train import TrainConfig, Trainer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["small", "base"])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data", default="", help="a data spec (default: random 28x28x1 images with labels)")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results",
                                                  "train_throughput.json"))
    a = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or os.path.join(tmp, "fm_like.npz")
        if not a.data:  # same shape as Fashion-MNIST; throughput does not depend on content
            np.savez(data, arr_0=rng.integers(0, 256, (2048, 28, 28, 1), dtype=np.uint8), arr_1=rng.integers(0, 10, 2048))
        for preset in a.presets:
            for bf16 in (q == "bf16" for q in a.precisions):
                t = Trainer(TrainConfig(data=data, out=os.path.join(tmp, f"{preset}{bf16}"), preset=preset, steps=1,
                                        batch_size=a.batch_size, bf16=bf16), progress=False)
                times = []
                for i in range(a.steps + 3):
                    t0 = time.perf_counter()
                    t.train_step()
                    t.step += 1
                    if i >= 3:
                        times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                n_params = sum(q.numel() for q in t.net.parameters())
                rows.append({"preset": preset, "bf16": bf16, "params_M": round(n_params / 1e6, 2),
                             "batch": a.batch_size, "s_per_step": round(med, 4), "img_per_s": round(a.batch_size / med, 1)})
                print(rows[-1], flush=True)
    load = os.getloadavg()
    out = {"data": a.data or "28x28x1 random", "load_avg": load, "threads": torch.get_num_threads(), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
    print("| preset | params | precision | samples/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['params_M']}M | {'bf16' if r['bf16'] else 'fp32'} | {r['img_per_s']} |")
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
