"""A small line chart written with Pillow (no plotting library needed): training curves for
the docs, e.g. validation loss against minutes."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def line_chart(series: dict[str, Sequence[tuple[float, float]]], path: str | Path, *, xlabel: str = "",
               ylabel: str = "", title: str = "", hlines: dict[str, float] | None = None,
               size: tuple[int, int] = (900, 560), ylim: tuple[float, float] | None = None) -> Path:
    """Draw each series (name -> [(x, y), ...]) as a line with dots, optional labelled
    horizontal reference lines (name -> y), and save a PNG. Returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    if not series or not any(series.values()):
        raise ValueError("line_chart needs at least one non-empty series")
    hlines = hlines or {}
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts] + list(hlines.values())
    x0, x1 = 0.0, max(xs) * 1.03
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    pad = 0.04 * (y1 - y0 or 1.0)
    y0, y1 = (y0, y1) if ylim else (y0 - pad, y1 + pad)
    W, H = size
    left, right, top, bottom = 80, 20, 40, 60
    font = ImageFont.load_default()
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)

    def px(x, y):
        y = min(max(y, y0), y1)  # values outside ylim sit on the frame
        return (left + (x - x0) / (x1 - x0) * (W - left - right),
                top + (y1 - y) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for t in _ticks(x0, x1):
        X, _ = px(t, y0)
        d.line([X, H - bottom, X, H - bottom + 5], fill=(0, 0, 0))
        d.line([X, top, X, H - bottom], fill=(235, 235, 235))
        d.text((X - 10, H - bottom + 8), f"{t:g}", fill=(0, 0, 0), font=font)
    for t in _ticks(y0, y1):
        _, Y = px(x0, t)
        d.line([left - 5, Y, left, Y], fill=(0, 0, 0))
        d.line([left, Y, W - right, Y], fill=(235, 235, 235))
        d.text((8, Y - 6), f"{t:.3g}", fill=(0, 0, 0), font=font)
    for name, y in hlines.items():
        _, Y = px(x0, y)
        for X in range(left, W - right, 12):  # dashed
            d.line([X, Y, min(X + 6, W - right), Y], fill=(120, 120, 120))
        d.text((W - right - 8 - 6 * len(name), Y - 13), name, fill=(90, 90, 90), font=font)
    for i, (name, pts) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        P = [px(x, y) for x, y in sorted(pts)]
        if len(P) > 1:
            d.line(P, fill=c, width=2)
        for X, Y in P:
            d.ellipse([X - 3, Y - 3, X + 3, Y + 3], fill=c)
        d.rectangle([left + 12, top + 10 + 16 * i, left + 24, top + 20 + 16 * i], fill=c)
        d.text((left + 30, top + 9 + 16 * i), name, fill=(0, 0, 0), font=font)
    d.text((left + (W - left - right) // 2 - 3 * len(xlabel), H - 25), xlabel, fill=(0, 0, 0), font=font)
    d.text((8, 12), ylabel, fill=(0, 0, 0), font=font)
    d.text((left + (W - left - right) // 2 - 3 * len(title), 12), title, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
