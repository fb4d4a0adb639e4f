"""One log-log line plot, drawn with PIL so the benchmarks need no plotting library."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def line_plot(series: dict, path, title: str, xlabel: str, ylabel: str = "FCD"):
    """series: name -> [(x, y), ...] (x and y > 0); both axes logarithmic, one coloured line per name."""
    W, H, m = 680, 440, 60
    pts = [p for rows in series.values() for p in rows]
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    x0, x1, y0, y1 = lx.min(), lx.max(), ly.min(), ly.max()
    sx = lambda v: m + (np.log(v) - x0) / max(x1 - x0, 1e-9) * (W - 2 * m)  # noqa: E731
    sy = lambda v: H - m - (np.log(v) - y0) / max(y1 - y0, 1e-9) * (H - 2 * m)  # noqa: E731
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((m, m, W - m, H - m), outline="black")
    d.text((m, 10), title, fill="black")
    for x in sorted({p[0] for p in pts}):
        d.text((sx(x) - 6, H - m + 5), f"{x:g}", fill="black")
    for v in np.exp(np.linspace(y0, y1, 5)):
        d.text((5, sy(v) - 5), f"{v:.2f}", fill="black")
    d.text((W // 2 - 20, H - 25), xlabel, fill="black")
    d.text((5, m - 20), ylabel, fill="black")
    for k, (name, rows) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        xy = [(sx(x), sy(y)) for x, y in rows]
        if len(xy) > 1:
            d.line(xy, fill=c, width=2)
        for x, y in xy:
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=c)
        d.text((W - m - 230, m + 8 + 14 * k), name, fill=c)
    img.save(path)
