"""Residual MLP for vectors (2-D toys, standardized numeric tables)."""
from __future__ import annotations

from torch import nn

from .embeddings import NoiseEmbedding


class ResidualBlock(nn.Module):
    def __init__(self, width, emb_dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.emb = nn.Linear(width, 2 * width), nn.Linear(emb_dim, 2 * width)
        self.fc2 = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(2 * width, width))

    def forward(self, h, emb):
        return h + self.fc2(self.fc1(self.norm(h)) + self.emb(emb))


class ResidualMLP(nn.Module):
    def __init__(self, dim, width=256, depth=4, num_classes=0, emb_scale=250.0, dropout=0.0):
        super().__init__()
        self.embed = NoiseEmbedding(width, width, emb_scale, num_classes)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def representation(self, x, c_noise, class_labels=None):
        """The residual stream after the last block [N, width], which the output head reads: the network's own
        coordinates for x (the anomaly detector's nearest-neighbour score). Its k-NN distance ranks anomalies on tables as
        well as the k-NN distance on the standardized columns (docs/anomaly.md)."""
        emb = nn.functional.silu(self.embed(c_noise, class_labels))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return h

    def forward(self, x, c_noise, class_labels=None):
        return self.out(self.representation(x, c_noise, class_labels))
