"""A bidirectional transformer over tokens, for masked diffusion of text: token ids (MASK included) -> logits of the
clean token at every position."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenTransformer(nn.Module):
    """tokens [N, L] (ids < vocab, the last of which is MASK) -> logits [N, L, vocab - 1] over the clean tokens. No
    time input: with an absorbing MASK the count of masks carries the noise level (MDLM, Sahoo et al. 2024). causal:
    each position sees only those before it (the same network as an autoregressive baseline; logits at i are for
    token i + 1)."""

    def __init__(self, vocab: int, length: int, width=128, depth=4, heads=4, dropout=0.0, causal=False, num_classes=0,
                 positions="learned"):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.norm, self.out = nn.LayerNorm(width), nn.Linear(width, vocab - 1)
        self.causal, self.rotary = causal, positions == "rotary"
        if self.rotary:  # relative positions in every attention (RoFormer, Su et al. 2021)
            self.blocks = nn.ModuleList(RotaryBlock(width, heads, dropout) for _ in range(depth))
            freq = 10_000 ** (-torch.arange(0, width // heads, 2) / (width // heads))
            angle = torch.arange(length)[:, None] * freq
            self.register_buffer("cos", angle.cos(), persistent=False)
            self.register_buffer("sin", angle.sin(), persistent=False)
        else:  # an absolute position vector added to each token's
            self.pos = nn.Parameter(torch.randn(length, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def representation(self, tokens, class_labels=None):
        """The last layer's normalized states [N, L, width]."""
        L = tokens.shape[1]
        h = self.embed(tokens) if self.rotary else self.embed(tokens) + self.pos[:L]
        if self.label is not None and class_labels is not None:
            h = h + self.label(class_labels)[:, None]
        if self.rotary:
            for block in self.blocks:
                h = block(h, self.cos[:L], self.sin[:L], self.causal)
            return self.norm(h)
        mask = nn.Transformer.generate_square_subsequent_mask(L, device=tokens.device) if self.causal else None
        return self.norm(self.blocks(h, mask=mask, is_causal=self.causal))

    def forward(self, tokens, class_labels=None):
        return self.out(self.representation(tokens, class_labels))


class RotaryBlock(nn.Module):
    """A pre-norm transformer layer whose queries and keys are rotated by their positions."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.qkv, self.proj = nn.LayerNorm(width), nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, h, cos, sin, causal: bool):
        N, L, W = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(N, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(_rotate(q, cos, sin), _rotate(k, cos, sin), v, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = h + self.proj(a.transpose(1, 2).reshape(N, L, W))
        return h + self.mlp(self.norm2(h))


def _rotate(x, cos, sin):
    """Each pair (x_i, x_{i + d/2}) of the last dimension turned by its position's angle for frequency i."""
    x1, x2 = x.chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)
