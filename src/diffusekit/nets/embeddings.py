"""Noise-level and class embeddings shared by the networks."""
from __future__ import annotations

import math

import torch
from torch import nn


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of c_noise (times emb_scale), then a 2-layer MLP; plus an optional class embedding and an
    optional linear map of an augmentation vector (augment.py; zero-initialised, so no vector = the zero vector).

    Class index ``num_classes`` is the null label used for classifier-free guidance.
    """

    def __init__(self, channels: int, emb_dim: int, emb_scale: float, num_classes: int = 0, augment_dim: int = 0):
        super().__init__()
        self.channels, self.emb_scale = channels, emb_scale
        self.mlp = nn.Sequential(nn.Linear(2 * (channels // 2), emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.augment_emb = nn.Linear(augment_dim, emb_dim, bias=False) if augment_dim else None
        if self.augment_emb is not None:
            nn.init.zeros_(self.augment_emb.weight)

    def forward(self, c_noise, class_labels=None, augment_labels=None):
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
        args = (c_noise.float() * self.emb_scale)[:, None] * freqs[None]
        emb = self.mlp(torch.cat([args.cos(), args.sin()], 1))
        if self.class_emb is not None:
            if class_labels is None:  # unconditional call on a conditional net: use the null label
                class_labels = torch.full((c_noise.shape[0],), self.class_emb.num_embeddings - 1, device=c_noise.device)
            emb = emb + self.class_emb(class_labels)
        if self.augment_emb is not None and augment_labels is not None:
            emb = emb + self.augment_emb(augment_labels.to(emb.dtype))
        return emb
