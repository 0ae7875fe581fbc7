"""Small PNG figures drawn with Pillow (no plotting library is needed at run time): line
charts for metric curves and heat-map grids for attention patterns."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (127, 127, 127)]


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(start, hi + step * 0.001, step)]


def line_chart(series: Sequence[dict], *, title: str = "", xlabel: str = "", ylabel: str = "",
               ylim: tuple[float, float] | None = None, size: tuple[int, int] = (520, 340)) -> Image.Image:
    """One panel. series: [{"x": [...], "y": [...], "label": str, "dash": bool (optional),
    "colour": index or RGB (optional)}]."""
    W, H = size
    left, right, top, bottom = 56, 12, 28, 44
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(12), _font(11)
    series = [s for s in series if len(s["x"])]
    xs = np.concatenate([np.asarray(s["x"], float) for s in series] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(s["y"], float) for s in series] or [np.zeros(1)])
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = ylim if ylim else (float(ys.min()), float(ys.max()))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    if not ylim:  # a margin, so a line at the best or worst value is not drawn on the frame
        y0, y1 = y0 - 0.04 * (y1 - y0), y1 + 0.04 * (y1 - y0)
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)
    for t in _nice_ticks(y0, y1):
        d.line([(left, py(t)), (W - right, py(t))], fill=(230, 230, 230))
        d.text((left - 6, py(t)), f"{t:g}", fill="black", font=fs, anchor="rm")
    for t in _nice_ticks(x0, x1):
        d.line([(px(t), top), (px(t), H - bottom)], fill=(240, 240, 240))
        d.text((px(t), H - bottom + 4), f"{t:g}", fill="black", font=fs, anchor="ma")
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for i, s in enumerate(series):
        c = s.get("colour", i)
        colour = COLOURS[c % len(COLOURS)] if isinstance(c, int) else tuple(c)
        pts = [(px(x), py(y)) for x, y in zip(s["x"], s["y"])]
        if s.get("dash"):
            for a, b in zip(pts[::2], pts[1::2]):
                d.line([a, b], fill=colour, width=2)
        elif len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        if s.get("marker", len(pts) <= 24):
            for p in pts:
                d.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=colour)
    # legend (top-left inside the panel)
    ly = top + 6
    for i, s in enumerate(series):
        if not s.get("label"):
            continue
        c = s.get("colour", i)
        colour = COLOURS[c % len(COLOURS)] if isinstance(c, int) else tuple(c)
        d.line([(left + 8, ly + 6), (left + 26, ly + 6)], fill=colour, width=3)
        d.text((left + 30, ly), s["label"], fill="black", font=fs)
        ly += 15
    d.text((W / 2, 6), title, fill="black", font=f, anchor="ma")
    d.text(((left + W - right) / 2, H - 18), xlabel, fill="black", font=fs, anchor="ma")
    txt = Image.new("RGB", (H, 16), "white")
    ImageDraw.Draw(txt).text((H / 2, 1), ylabel, fill="black", font=fs, anchor="ma")
    img.paste(txt.rotate(90, expand=True), (2, 0))
    return img


def heatmap(m: np.ndarray, *, cell: int = 5, title: str = "", labels: Sequence[str] | None = None,
            vmax: float | None = None) -> Image.Image:
    """A (rows, cols) matrix in [0, vmax] as white-to-blue cells, a title above and optional
    one-character labels along both axes."""
    m = np.asarray(m, float)
    vmax = vmax or max(float(m.max()), 1e-9)
    v = np.clip(m / vmax, 0, 1)
    rgb = (255 - v[..., None] * np.array([225, 160, 75])).astype(np.uint8)  # white -> dark blue
    core = Image.fromarray(rgb, "RGB").resize((m.shape[1] * cell, m.shape[0] * cell), Image.NEAREST)
    pad_t, pad_l = 18, (10 if labels else 0)
    title_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=_font(11))) + 8
    width = max(core.width + pad_l + 2, title_w)
    img = Image.new("RGB", (width, core.height + pad_t + (10 if labels else 0) + 2), "white")
    pad_l = (width - core.width) // 2 if labels is None else pad_l + (width - core.width - pad_l - 2) // 2
    img.paste(core, (pad_l, pad_t))
    d = ImageDraw.Draw(img)
    d.rectangle([pad_l - 1, pad_t - 1, pad_l + core.width, pad_t + core.height], outline=(120, 120, 120))
    d.text((img.width / 2, 3), title, fill="black", font=_font(11), anchor="ma")
    if labels:
        f = _font(max(cell, 7))
        for i, ch in enumerate(labels):
            if cell >= 7 or i % 2 == 0:
                d.text((pad_l - 5, pad_t + i * cell + cell / 2), ch, fill="black", font=f, anchor="mm")
                d.text((pad_l + i * cell + cell / 2, pad_t + core.height + 5), ch, fill="black", font=f, anchor="mm")
    return img


def grid(images: Sequence[Image.Image], cols: int, *, pad: int = 6, title: str = "") -> Image.Image:
    """Tile images (row-major) on white, with an optional title line on top."""
    rows = (len(images) + cols - 1) // cols
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    top = 22 if title else 0
    out = Image.new("RGB", (cols * w + (cols + 1) * pad, top + rows * h + (rows + 1) * pad), "white")
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out.paste(im, (pad + c * (w + pad), top + pad + r * (h + pad)))
    if title:
        ImageDraw.Draw(out).text((out.width / 2, 4), title, fill="black", font=_font(13), anchor="ma")
    return out
