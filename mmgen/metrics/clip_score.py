"""CLIP score with our own CLIP: 100 x max(cos(image embedding, text embedding), 0), the
torchmetrics convention (Hessel et al. 2021 use 2.5 x cos). Comparable only between runs
scored by the same CLIP checkpoint."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..text.captions import quiet


@torch.no_grad()
def _embed(clip, images: torch.Tensor, prompts: Sequence[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text embeddings (N, D) each, on the CPU. Images are resized /
    channel-converted to what the image tower takes; prompts longer than the text tower's
    context are cut."""
    if len(prompts) != images.shape[0]:
        raise ValueError(f"clip_score needs one prompt per image: {images.shape[0]} images, {len(prompts)} prompts")
    from ..models.clip import fit_to_image_tower
    clip.eval()
    dev = next(clip.parameters()).device
    imgs, txts = [], []
    for i in range(0, images.shape[0], batch_size):
        x = fit_to_image_tower(clip, images[i:i + batch_size].to(dev))
        texts = list(prompts[i:i + batch_size])
        if hasattr(clip, "tokenize"):  # ours: cut to its context instead of refusing long captions
            texts = quiet(clip.tokenize, texts, truncate=True)
        imgs.append(F.normalize(clip.encode_image(x).float(), dim=-1).cpu())
        txts.append(F.normalize(clip.encode_text(texts).float(), dim=-1).cpu())
    return torch.cat(imgs), torch.cat(txts)


def clip_scores(clip, images: torch.Tensor, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """(N,) 100 * cos(image, prompt) of images (N, C, H, W) in [-1, 1], one prompt each, not
    clamped (a reranker compares them)."""
    img, txt = _embed(clip, images, prompts, batch_size)
    return 100.0 * (img * txt).sum(-1)


def caption_retrieval(clip, images: torch.Tensor, prompts: Sequence[str], ks: Sequence[int] = (1, 5),
                      batch_size: int = 256) -> dict[str, float]:
    """{"r1": ..., "r5": ...}: the share of images whose own prompt is among the CLIP's k
    best of all the distinct prompts given (the R-precision of text-to-image papers, over
    the whole prompt set). Unlike the CLIP score it asks whether an image is specific to
    its prompt: a generic image can score high against its prompt and as high against the
    others."""
    img, txt = _embed(clip, images, prompts, batch_size)
    names = sorted(set(prompts))
    if len(names) < 2:
        raise ValueError("caption retrieval needs at least two distinct prompts")
    first = {p: i for i, p in reversed(list(enumerate(prompts)))}  # one embedding per distinct prompt
    column = {p: j for j, p in enumerate(names)}
    sim = img @ txt[[first[p] for p in names]].T  # (N, P)
    own = sim.gather(1, torch.tensor([column[p] for p in prompts])[:, None])  # (N, 1)
    rank = (sim >= own).sum(1) - 1  # other prompts scored at least as high as the image's own (ties count against)
    return {f"r{k}": float((rank < k).float().mean()) for k in ks}


def clip_score(clip, images: torch.Tensor, prompts: Sequence[str], *, batch_size: int = 256,
               reduction: str = "mean"):
    """images (N, C, H, W) in [-1, 1] with one prompt each -> the mean of 100 x max(cos, 0)
    (or (N,) scores with reduction='none')."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    s = clip_scores(clip, images, prompts, batch_size).clamp(min=0)
    return float(s.mean()) if reduction == "mean" else s
