"""A bidirectional transformer over tokens, for masked diffusion of text: token ids (MASK included) -> logits of the
clean token at every position."""
from __future__ import annotations

import torch
from torch import nn


class TokenTransformer(nn.Module):
    """tokens [N, L] (ids < vocab, the last of which is MASK) -> logits [N, L, vocab - 1] over the clean tokens. No
    time input: with an absorbing MASK the count of masks carries the noise level (MDLM, Sahoo et al. 2024). causal:
    each position sees only those before it (the same network as an autoregressive baseline; logits at i are for
    token i + 1)."""

    def __init__(self, vocab: int, length: int, width=128, depth=4, heads=4, dropout=0.0, causal=False, num_classes=0):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(length, width) * 0.02)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.out = nn.LayerNorm(width), nn.Linear(width, vocab - 1)
        self.causal = causal
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def representation(self, tokens, class_labels=None):
        """The last layer's normalized states [N, L, width]."""
        h = self.embed(tokens) + self.pos[:tokens.shape[1]]
        if self.label is not None and class_labels is not None:
            h = h + self.label(class_labels)[:, None]
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device) if self.causal \
            else None
        return self.norm(self.blocks(h, mask=mask, is_causal=self.causal))

    def forward(self, tokens, class_labels=None):
        return self.out(self.representation(tokens, class_labels))
