"""torch.compile vs eager for the training step (the real Trainer.train_step, small preset, batch 128, 28x28):
median img/s of 15 steps after 3 warm-up, eager, compiled, eager again. Prints; writes nothing.

    python benchmarks/experiments/bench_compile.py
"""
import os, statistics, tempfile, time, numpy as np, torch
from diffusekit.train import TrainConfig, Trainer
rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "fm.npz")
    np.savez(data, arr_0=rng.integers(0, 256, (2048, 28, 28, 1), dtype=np.uint8))
    res = {}
    for mode in ("eager", "compile", "eager"):
        t = Trainer(TrainConfig(data=data, out=os.path.join(tmp, mode + str(len(res))), steps=1, batch_size=128, class_cond="off"), progress=False)
        if mode == "compile":
            t0 = time.time(); t.denoiser.net = torch.compile(t.net)
        times = []
        for i in range(18):
            t1 = time.perf_counter(); t.train_step(); t.step += 1
            if i == 0 and mode == "compile": print("first step (compile)", time.time() - t0, flush=True)
            if i >= 3: times.append(time.perf_counter() - t1)
        res[mode + str(len(res))] = 128 / statistics.median(times)
        print(mode, round(res[mode + str(len(res) - 1)], 1), "img/s", os.getloadavg(), flush=True)
