"""Codecs map model space (images NCHW in [-1, 1]; standardized vectors) to user space and back.

A codec is saved with the checkpoint, so `sample` writes real pixels or real rows without repeating flags.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DiffusekitError


class ImageCodec:
    kind = "image"

    def __init__(self, channels: int, size):
        """size: an int (square) or (height, width)."""
        h, w = (size, size) if isinstance(size, (int, np.integer)) else size
        self.channels, self.height, self.width = int(channels), int(h), int(w)

    @property
    def shape(self):
        return (self.channels, self.height, self.width)

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"

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
        if a.shape[1:] != (self.height, self.width, self.channels):
            raise DiffusekitError(f"images are {a.shape[2]}x{a.shape[1]} (width x height) with {a.shape[3]} channel(s);"
                                  f" the model expects {self.size_text} with {self.channels} channel(s)")
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
        size = self.height if self.height == self.width else [self.height, self.width]
        return {"kind": "image", "channels": self.channels, "size": size}


class VectorCodec:
    """A table: numeric columns standardized, (value - mean) / std, one dimension each; a categorical column of K
    levels one-hot over K dimensions, +1 for its level and -1 elsewhere (unit scale, like a standardized column).
    Decoding takes the level whose dimension is largest. User space: a float array when every column is numeric,
    else an object array of floats and level strings."""

    kind = "vector"

    def __init__(self, mean, std, columns=None, categories=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.columns = list(columns) if columns is not None else [f"x{i}" for i in range(len(self.mean))]
        self.categories = {c: [str(v) for v in levels] for c, levels in (categories or {}).items()}
        # the model dimensions of each column, in column order
        self.slices, d = [], 0
        for c in self.columns:
            k = len(self.categories.get(c, [None]))
            self.slices.append(slice(d, d + k))
            d += k
        self._lookup = {c: _level_lookup(levels) for c, levels in self.categories.items()}

    @classmethod
    def fit(cls, values, columns=None, categorical=()):
        """values: rows of numbers, or (object array) rows whose non-numeric columns are categorical; columns named in
        `categorical` are categorical whatever their values look like."""
        values = np.asarray(values)
        columns = list(columns) if columns is not None else [f"x{i}" for i in range(values.shape[1])]
        numeric, categories = np.zeros(values.shape, dtype=np.float64), {}
        for j, c in enumerate(columns):
            if c not in categorical:
                try:
                    numeric[:, j] = values[:, j].astype(np.float64)
                    continue
                except (TypeError, ValueError):
                    pass
            categories[c] = sorted({str(v) for v in values[:, j]})
        std = numeric.std(0)
        # a column constant up to rounding (e.g. float32 round trips) is constant: dividing by its 1e-25 spread
        # would blow every later value up
        tiny = 1e-9 * max(1.0, float(np.abs(numeric).max(initial=0.0)))
        return cls(numeric.mean(0), np.where(std > tiny, std, 1.0), columns, categories)

    @property
    def shape(self):
        return (self.slices[-1].stop if self.slices else 0,)

    @property
    def numeric(self) -> list[bool]:
        return [c not in self.categories for c in self.columns]

    def decode(self, x: torch.Tensor) -> np.ndarray:
        # float64 values: a float32 one holds 7 digits, so a column like a unix time (1.7e9, spread 10) would lose
        # its spread on the way back (the detector and `encode` re-encode decoded rows)
        x = x.double().cpu().numpy()
        if not self.categories:
            return x * self.std + self.mean
        out = np.empty((len(x), len(self.columns)), dtype=object)
        for j, (c, sl) in enumerate(zip(self.columns, self.slices)):
            if c in self.categories:
                out[:, j] = np.asarray(self.categories[c], dtype=object)[x[:, sl].argmax(1)]
            else:
                out[:, j] = (x[:, sl.start] * self.std[j] + self.mean[j]).tolist()
        return out

    def encode(self, a, unseen: list | None = None) -> torch.Tensor:
        """User rows -> model space. A category the codec has not seen is an error, unless `unseen` is a list:
        then its block is all -1 (no level) and (row, column, value) is appended to the list."""
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != len(self.columns):
            raise DiffusekitError(f"expected rows of {len(self.columns)} values, got shape {a.shape}")
        x = np.empty((len(a), self.shape[0]))
        for j, (c, sl) in enumerate(zip(self.columns, self.slices)):
            if c in self.categories:
                block = -np.ones((len(a), sl.stop - sl.start))
                for i, v in enumerate(a[:, j]):
                    k = self._lookup[c](v)
                    if k is not None:
                        block[i, k] = 1.0
                    elif unseen is not None:
                        unseen.append((i, c, v))
                    else:
                        raise DiffusekitError(f"column {c!r}: category {v!r} (row {i + 1}) was not in the training data "
                                              f"(levels: {', '.join(self.categories[c][:10])}"
                                              f"{', ...' if len(self.categories[c]) > 10 else ''})")
                x[:, sl] = block
                continue
            try:
                col = a[:, j].astype(np.float64)
            except (TypeError, ValueError):
                raise DiffusekitError(f"column {c!r} is numeric in the model but holds non-numeric values") from None
            if not np.isfinite(col).all():
                raise DiffusekitError(f"data contain NaN or infinite values (column {c!r})")
            x[:, sl.start] = (col - self.mean[j]) / self.std[j]
        return torch.from_numpy(x).float()

    def log_det_scale(self) -> float:
        """log |d model / d data| per row: add to a model-space log-density to get one in data units (nats).
        One-hot dimensions have no data units: their density stays in model units."""
        return float(-np.log(self.std[self.numeric]).sum())

    def column_of_dim(self) -> list[int]:
        """The column index of each model dimension."""
        return [j for j, sl in enumerate(self.slices) for _ in range(sl.stop - sl.start)]

    def to_dict(self):
        d = {"kind": "vector", "mean": self.mean.tolist(), "std": self.std.tolist(), "columns": self.columns}
        if self.categories:
            d["categories"] = self.categories
        return d


def _level_lookup(levels):
    """value -> level index: by its text, or by number for numeric-looking levels (3.0 finds "3")."""
    by_text = {v: k for k, v in enumerate(levels)}
    by_number = {}
    for k, v in enumerate(levels):
        try:
            by_number.setdefault(float(v), k)
        except ValueError:
            pass

    def find(v):
        k = by_text.get(str(v).strip())
        if k is None and not isinstance(v, str):
            try:
                k = by_number.get(float(v))
            except (TypeError, ValueError):
                pass
        return k

    return find


def codec_from_dict(d: dict):
    if d.get("kind") == "image":
        return ImageCodec(d["channels"], d["size"])
    if d.get("kind") == "vector":
        return VectorCodec(d["mean"], d["std"], d.get("columns"), d.get("categories"))
    raise DiffusekitError(f"unknown codec {d!r}")
