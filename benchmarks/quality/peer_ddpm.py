"""The denoising-diffusion-pytorch peer of the race; runs in its own virtual environment (race.py builds it).

    VENV/bin/python benchmarks/quality/peer_ddpm.py MINUTES TRAIN.npy OUT.npz N_SAMPLES

Its recommended recipe, its defaults wherever it has one: Unet + GaussianDiffusion (1000 steps, its default
objective pred_v and sigmoid beta schedule), the loop of its Trainer (Adam lr 1e-4, betas 0.9/0.99, batch 16,
random horizontal flips, grad-norm clip 1, ema_pytorch EMA with decay 0.995 updated every 10 steps), sampled with its DDIM at 50 steps (eta 0). Scaled to
28x28 grey images and to about the other systems' parameter count: dim 32, dim_mults (1, 2, 2) (1.41M parameters).
Prints one JSON line: steps, images_seen, params, sample_seconds.
"""
import json
import sys
import time

import numpy as np
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA


def main():
    minutes, train_path, out_path, n_samples = float(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.manual_seed(0)
    data = torch.from_numpy(np.load(train_path)).float().div(255).unsqueeze(1)  # [N, 1, 28, 28] in [0, 1]
    model = Unet(dim=32, dim_mults=(1, 2, 2), channels=1)
    diffusion = GaussianDiffusion(model, image_size=28, timesteps=1000, sampling_timesteps=50)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    batch, steps, t0 = 16, 0, time.time()
    while time.time() - t0 < minutes * 60:
        x = data[torch.randint(0, len(data), (batch,))]
        flip = torch.rand(batch) < 0.5  # its Trainer's default augment_horizontal_flip
        x[flip] = x[flip].flip(-1)
        loss = diffusion(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        steps += 1
    t1 = time.time()
    ema.ema_model.eval()
    imgs = [ema.ema_model.sample(batch_size=min(250, n_samples - i)) for i in range(0, n_samples, 250)]
    u8 = (torch.cat(imgs).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(out_path, arr_0=u8)
    print(json.dumps({"steps": steps, "images_seen": steps * batch, "params": params,
                      "sample_seconds": round(time.time() - t1, 1)}))


if __name__ == "__main__":
    main()
