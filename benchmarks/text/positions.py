"""Learned against rotary positions at equal steps (issue 31): held-out bits per character of masked diffusion
(the library's loss and network) or of the autoregressive model, every 100 steps.

    python benchmarks/text/positions.py mdlm learned 200 & python benchmarks/text/positions.py mdlm rotary 200

The corpus and windows of `bpc.py` (held-out Shakespeare, 128 characters); small preset, batch 64, AdamW at 2e-3 with
200 warm-up steps, gradient clip 1; one thread. Masked diffusion is scored by its bound on 300 held-out windows (32
draws of the level and mask, the same draws for both), the autoregressive model by its exact NLL. Prints
(step, seconds, bits per character); a diagnostic, no results file.
"""
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bpc  # noqa: E402

from diffusekit.masked import MaskedDiffusionLoss, TokenDenoiser, masked_loss  # noqa: E402
from diffusekit.nets import TRANSFORMER_PRESETS  # noqa: E402
from diffusekit.nets.transformer import TokenTransformer  # noqa: E402


def main():
    kind, positions, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    train, test, _ = bpc.corpus(Path(tempfile.mkdtemp(prefix="text-positions-")))
    torch.manual_seed(0)
    net = TokenTransformer(vocab=28, length=bpc.LENGTH, causal=kind == "ar", positions=positions,
                           **TRANSFORMER_PRESETS["small"])  # 27 characters + MASK (or the start token)
    D, loss_fn = TokenDenoiser(net, 27), MaskedDiffusionLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    g, t0 = torch.Generator().manual_seed(1), time.time()
    held = bpc.windows(test, 300, torch.Generator().manual_seed(2))

    def loss(x):
        if kind == "mdlm":
            return loss_fn(D, x, generator=g).mean()
        inp = torch.cat([torch.full((len(x), 1), 27), x[:, :-1]], 1)
        return torch.nn.functional.cross_entropy(net(inp).reshape(-1, 27), x.reshape(-1))

    @torch.no_grad()
    def bits():
        net.eval()
        if kind == "mdlm":
            draws = torch.Generator().manual_seed(7)
            nats = sum(masked_loss(D, held, *loss_fn.draw(held.shape, draws)).mean() for _ in range(32)) / 32
        else:
            nats = loss(held)
        net.train()
        return float(nats) / math.log(2)

    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 200)
        opt.zero_grad()
        loss(bpc.windows(train, 64, g)).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            print(kind, positions, (step + 1, round(time.time() - t0), round(bits(), 3)), flush=True)


if __name__ == "__main__":
    main()
