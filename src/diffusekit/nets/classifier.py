"""A small CNN classifier whose penultimate layer is the feature space of the Frechet classifier distance.

Works on any image size >= 8 (global average pooling). We train it ourselves (no Inception weights offline),
so its numbers are comparable only with other numbers from the same weights -- never with published FID.
"""
from __future__ import annotations

from torch import nn


class FeatureClassifier(nn.Module):
    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, self.feature_dim), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x):
        """x: images in model space (NCHW, [-1, 1]) -> logits."""
        return self.head(self.features(x))
