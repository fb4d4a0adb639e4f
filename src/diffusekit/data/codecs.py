"""Codecs map model space (images NCHW in [-1, 1]; standardized vectors) to user space and back.

A codec is saved with the checkpoint, so `sample` writes real pixels or real rows without repeating flags.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DiffusekitError


class ImageCodec:
    kind = "image"

    def __init__(self, channels: int, size: int):
        self.channels, self.size = int(channels), int(size)

    @property
    def shape(self):
        return (self.channels, self.size, self.size)

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Model space -> uint8 NHWC."""
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    def encode(self, a, unclipped: bool = False) -> torch.Tensor:
        """uint8 (0-255) or float in [0, 1], NHWC / NHW / NCHW -> model space NCHW. unclipped: floats may leave
        [0, 1] (a noisy measurement keeps its noise)."""
        a = np.asarray(a)
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise DiffusekitError(f"expected images of shape N x H x W x C, got shape {a.shape}")
        if a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
            a = a.transpose(0, 2, 3, 1)
        if a.shape[1:] != (self.size, self.size, self.channels):
            raise DiffusekitError(f"images are {a.shape[1]}x{a.shape[2]} with {a.shape[3]} channel(s); the model "
                                  f"expects {self.size}x{self.size} with {self.channels} channel(s)")
        if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
            raise DiffusekitError(f"images must be uint8 (0-255) or float in [0, 1], got {a.dtype}")
        x = torch.from_numpy(a.astype(np.float32))
        if a.dtype == np.uint8:
            x = x / 255.0
        elif not torch.isfinite(x).all():
            raise DiffusekitError("images contain NaN or infinite values")
        elif not unclipped and (x.min() < 0 or x.max() > 1):
            raise DiffusekitError(f"float images must be in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        return (x * 2 - 1).permute(0, 3, 1, 2).contiguous()

    def to_dict(self):
        return {"kind": "image", "channels": self.channels, "size": self.size}


class VectorCodec:
    """Standardizes each column: model x = (value - mean) / std."""

    kind = "vector"

    def __init__(self, mean, std, columns=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.columns = list(columns) if columns is not None else [f"x{i}" for i in range(len(self.mean))]

    @classmethod
    def fit(cls, values: np.ndarray, columns=None):
        std = values.std(0)
        # a column constant up to rounding (e.g. float32 round trips) is constant: dividing by its 1e-25 spread
        # would blow every later value up
        tiny = 1e-9 * max(1.0, float(np.abs(values).max(initial=0.0)))
        return cls(values.mean(0), np.where(std > tiny, std, 1.0), columns)

    @property
    def shape(self):
        return (len(self.mean),)

    def decode(self, x: torch.Tensor) -> np.ndarray:
        return (x.double().cpu().numpy() * self.std + self.mean).astype(np.float32)

    def encode(self, a) -> torch.Tensor:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != len(self.mean):
            raise DiffusekitError(f"expected rows of {len(self.mean)} values, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise DiffusekitError("data contain NaN or infinite values")
        return torch.from_numpy((a - self.mean) / self.std).float()

    def log_det_scale(self) -> float:
        """log |d model / d data| per row: add to a model-space log-density to get one in data units (nats)."""
        return float(-np.log(self.std).sum())

    def to_dict(self):
        return {"kind": "vector", "mean": self.mean.tolist(), "std": self.std.tolist(), "columns": self.columns}


def codec_from_dict(d: dict):
    if d.get("kind") == "image":
        return ImageCodec(d["channels"], d["size"])
    if d.get("kind") == "vector":
        return VectorCodec(d["mean"], d["std"], d.get("columns"))
    raise DiffusekitError(f"unknown codec {d!r}")
