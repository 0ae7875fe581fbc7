"""One picture of a pipeline's output: a row per prompt, the prompt as the row's caption,
images upscaled (nearest neighbour, so pixels stay sharp) for viewing, scores under them."""
from __future__ import annotations

import torch

PAD = 2  # pixels between images, before upscaling (as torchvision's save_image)
LINE = 14  # height of a caption or score line (PIL's built-in default font, 10-11 px glyphs)


def raw_grid(images: torch.Tensor, padding: int = PAD):
    """uint8 (P, N, 3, H, W) -> a PIL image of the images at their own size, one row per
    prompt, `padding` black pixels around each (no captions)."""
    from PIL import Image
    P, N, _, H, W = images.shape
    canvas = torch.zeros(3, P * H + (P + 1) * padding, N * W + (N + 1) * padding, dtype=torch.uint8)
    for p in range(P):
        for j in range(N):
            y, x = padding + p * (H + padding), padding + j * (W + padding)
            canvas[:, y:y + H, x:x + W] = images[p, j]
    return Image.fromarray(canvas.permute(1, 2, 0).numpy(), "RGB")


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def make_grid(out, scale: int = 8, captions: bool = True, scores: bool | None = None):
    """A PIL image of a PipelineOutput: one row per prompt, each image upscaled `scale` times
    (nearest), `2 * scale` px between images; with captions, a line above each row holds the
    prompt; with scores (default: when the output has them), a line under each row holds
    the CLIP score of each image.

    Size: (N * W + (N + 1) * 2) * scale wide, (P * H + (P + 1) * 2) * scale + P * 14 * (lines)
    high, where lines = captions + scores."""
    from PIL import Image, ImageDraw, ImageFont
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    images = out.images
    if images.dtype != torch.uint8 or images.ndim != 5:
        raise ValueError(f"expected uint8 images (P, N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    P, N, _, H, W = images.shape
    show_scores = out.scores is not None if scores is None else bool(scores and out.scores is not None)
    lines = int(bool(captions)) + int(show_scores)
    pad, h, w = PAD * scale, H * scale, W * scale
    width = N * w + (N + 1) * pad
    canvas = Image.new("RGB", (width, pad + P * (lines * LINE + h + pad)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    y = pad
    for p in range(P):
        if captions:
            draw.text((pad, y), _fit(draw, str(out.prompts[p]), font, width - 2 * pad), fill="black", font=font)
            y += LINE
        for j in range(N):
            tile = Image.fromarray(images[p, j].permute(1, 2, 0).numpy(), "RGB")
            canvas.paste(tile.resize((w, h), Image.NEAREST), (pad + j * (w + pad), y))
        y += h
        if show_scores:
            for j in range(N):
                text = _fit(draw, f"{float(out.scores[p, j]):.1f}", font, w + pad)
                draw.text((pad + j * (w + pad), y + 1), text, fill="black", font=font)
            y += LINE
        y += pad
    return canvas
