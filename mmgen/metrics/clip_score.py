"""CLIP score with our own CLIP: 100 x max(cos(image embedding, text embedding), 0), the
torchmetrics convention (Hessel et al. 2021 use 2.5 x cos). Comparable only between runs
scored by the same CLIP checkpoint."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def clip_score(clip, images: torch.Tensor, prompts: Sequence[str], *, batch_size: int = 256,
               reduction: str = "mean"):
    """images (N, C, H, W) in [-1, 1] with one prompt each -> the mean score (or (N,) scores
    with reduction='none'). Images are resized / channel-converted to the CLIP image size."""
    if len(prompts) != images.shape[0]:
        raise ValueError(f"clip_score needs one prompt per image: {images.shape[0]} images, {len(prompts)} prompts")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    clip.eval()
    dev = next(clip.parameters()).device
    size, chans = _image_input(clip)
    scores = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(dev).float()
        if chans is not None and x.shape[1] != chans:
            x = x.mean(1, keepdim=True).expand(-1, chans, -1, -1)
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        img = F.normalize(clip.encode_image(x).float(), dim=-1)
        txt = F.normalize(clip.encode_text(list(prompts[i:i + batch_size])).float(), dim=-1)
        scores.append((100 * (img * txt).sum(-1)).clamp(min=0).cpu())
    s = torch.cat(scores)
    return float(s.mean()) if reduction == "mean" else s


def _image_input(clip) -> tuple[int | None, int | None]:
    """(image size, channels) the CLIP image tower expects, when it says."""
    visual = getattr(clip, "visual", None)
    cfg = getattr(visual, "config", None) or getattr(visual, "cfg", None)
    size = getattr(cfg, "img_size", None)
    chans = getattr(cfg, "in_chans", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return size, chans
