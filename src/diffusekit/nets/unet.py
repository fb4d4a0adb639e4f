"""U-Net for images (ADM-style: residual blocks with group norm and scale-shift noise conditioning,
self-attention at chosen resolutions, optional class conditioning)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import DiffusekitError
from .embeddings import NoiseEmbedding


def _norm(c):
    return nn.GroupNorm(math.gcd(c, 32), c)  # up to 32 groups, always a divisor of c


class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb_dim, dropout):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # scale and shift after norm2 (adaptive group norm)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, 1)
        h = self.conv2(self.drop(F.silu(self.norm2(h) * (1 + scale) + shift)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c, head_dim=32):
        super().__init__()
        self.heads = c // head_dim if c % head_dim == 0 else 1
        self.norm, self.qkv, self.proj = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads]
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    def __init__(self, in_channels, image_size, channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                 attn_resolutions=(), num_classes=0, emb_scale=250.0, dropout=0.0, augment_dim=0):
        super().__init__()
        H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
        if H % (2 ** (len(channel_mults) - 1)) or W % (2 ** (len(channel_mults) - 1)):
            raise DiffusekitError(f"image size {W}x{H} is not divisible by {2 ** (len(channel_mults) - 1)} "
                                  f"(the U-Net halves it {len(channel_mults) - 1} times); pick another image_size or preset",
                                  "image_size", "preset")
        if not channel_mults or min(channel_mults) < 1 or channels < 8:
            raise DiffusekitError(f"need channels >= 8 and positive channel multipliers, got {channels}, {list(channel_mults)}")
        emb_dim = 4 * channels
        self.embed = NoiseEmbedding(channels, emb_dim, emb_scale, num_classes, augment_dim)
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, skips, c, res = nn.ModuleList(), [channels], channels, H  # attention placed by height
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(c, channels * mult, emb_dim, dropout),
                                                Attention(channels * mult) if res in attn_resolutions else nn.Identity()]))
                c = channels * mult
                skips.append(c)
            if level < len(channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), Attention(c), ResBlock(c, c, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(c + skips.pop(), channels * mult, emb_dim, dropout),
                                              Attention(channels * mult) if res in attn_resolutions else nn.Identity()]))
                c = channels * mult
            if level > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]))
                res *= 2
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.checkpointing = False  # gradient checkpointing (train --checkpointing): less memory, one more forward

    def _run(self, block, h, emb):
        """A residual block and its attention (or identity); with checkpointing, its activations are recomputed in
        the backward pass instead of kept."""
        def fn(h, emb):
            return block[1](block[0](h, emb))
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, h, emb, use_reentrant=False)
        return fn(h, emb)

    def _encode(self, x, c_noise, class_labels, augment_labels=None):
        """(the bottleneck's activations, the skip activations, the embedding)."""
        emb = F.silu(self.embed(c_noise, class_labels, augment_labels))
        h = self.inp(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb) if isinstance(block[0], ResBlock) else block[0](h)
            hs.append(h)
        h = self._run(self.mid[:2], h, emb)
        return self._run([self.mid[2], nn.Identity()], h, emb), hs, emb

    def representation(self, x, c_noise, class_labels=None, positions: int = 3):
        """The bottleneck's activations [N, C * r * r], averaged down to at most `positions` x `positions` (r): what the
        network knows of x beyond the skip connections (the anomaly detector's nearest-neighbour score). 3 x 3 keeps
        where things are but not their exact place, which ranked anomalies better than the full map or its mean
        (benchmarks/HISTORY.md, one-class anomaly detection)."""
        h = self._encode(x, c_noise, class_labels)[0]
        return F.adaptive_avg_pool2d(h, min(h.shape[-1], positions)).flatten(1)

    def forward(self, x, c_noise, class_labels=None, augment_labels=None):
        h, hs, emb = self._encode(x, c_noise, class_labels, augment_labels)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = self._run(block, torch.cat([h, hs.pop()], 1), emb)
            else:
                h = block[1](block[0](h))
        return self.out(h)
