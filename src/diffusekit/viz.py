"""Pictures: image grids, strips, and 2-D scatter plots, as PIL images (no plotting library needed)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def image_grid(images: np.ndarray, nrow: int | None = None, scale: int = 1, pad: int = 1) -> Image.Image:
    """uint8 NHWC -> one PIL image, `nrow` images per row, each upscaled `scale`x (nearest)."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = im
    out = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out


def scatter(points: np.ndarray, size: int = 400, reference: np.ndarray | None = None) -> Image.Image:
    """2-D scatter of the first two columns (grey: reference data, black: points)."""
    both = points[:, :2] if reference is None else np.concatenate([points[:, :2], reference[:, :2]])
    lo, hi = np.percentile(both, 0.5, 0), np.percentile(both, 99.5, 0)
    span = np.where(hi > lo, hi - lo, 1.0) * 1.1
    mid = (hi + lo) / 2
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    for pts, colour in ((reference, (180, 180, 180)), (points, (0, 0, 0))):
        if pts is None:
            continue
        uv = ((pts[:, :2] - mid) / span + 0.5) * size
        for u, v in uv:
            draw.ellipse((float(u) - 1, float(size - v) - 1, float(u) + 1, float(size - v) + 1), fill=colour)
    return img


def picture(decoded: np.ndarray, kind: str, nrow=None, scale=None) -> Image.Image:
    """A grid for images, a scatter for vectors."""
    if kind == "image":
        return image_grid(decoded, nrow, scale or max(1, 64 // decoded.shape[1]))
    if decoded.dtype == object:  # a table with categorical columns: each level at its index
        decoded = np.stack([_as_numbers(col) for col in decoded.T], 1)
    return scatter(decoded)


def _as_numbers(col: np.ndarray) -> np.ndarray:
    try:
        return col.astype(np.float64)
    except (TypeError, ValueError):
        return np.unique(col.astype(str), return_inverse=True)[1].astype(np.float64)


def line_plot(x, y, xlabel: str, ylabel: str, title: str = "", size: int = 360, diagonal=False) -> Image.Image:
    """A curve on the unit square (ROC, precision-recall), with axis labels."""
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    m = 40  # margin
    span = size - 2 * m
    to_px = lambda u, v: (m + float(u) * span, size - m - float(v) * span)  # noqa: E731
    d.rectangle((m, m, size - m, size - m), outline=(0, 0, 0))
    if diagonal:
        d.line((to_px(0, 0), to_px(1, 1)), fill=(180, 180, 180))
    d.line([to_px(u, v) for u, v in zip(x, y)], fill=(200, 30, 30), width=2)
    d.text((size / 2 - 20, size - m + 12), xlabel, fill=(0, 0, 0))
    d.text((4, m - 20), ylabel, fill=(0, 0, 0))
    if title:
        d.text((m, 8), title, fill=(0, 0, 0))
    return img
