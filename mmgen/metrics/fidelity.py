"""Prompt fidelity on the shapes dataset: the share of generated images in which the
rule-based checker `mmgen.data.shapes.check(image, caption)` reads back what the caption
asked for (colour, shape and position of every object)."""
from __future__ import annotations

from typing import Sequence

import torch


def _passed(result) -> bool:
    if isinstance(result, bool):
        return result
    if isinstance(result, dict):
        for key in ("ok", "match", "pass", "passed", "correct"):
            if key in result:
                return bool(result[key])
    if isinstance(result, tuple) and result:
        return bool(result[0])
    for attr in ("ok", "match", "passed"):
        if hasattr(result, attr):
            return bool(getattr(result, attr))
    return bool(result)


@torch.no_grad()
def prompt_fidelity(images: torch.Tensor, captions: Sequence[str], *, checker=None, reduction: str = "mean"):
    """images (N, C, H, W) in [-1, 1], one caption each -> the fraction the checker accepts
    (or a (N,) bool tensor with reduction='none')."""
    if len(captions) != images.shape[0]:
        raise ValueError(f"prompt_fidelity needs one caption per image: {images.shape[0]} images, "
                         f"{len(captions)} captions")
    if checker is None:
        from ..data.shapes import check as checker
    ok = torch.tensor([_passed(checker(img.float().cpu(), cap)) for img, cap in zip(images, captions)])
    return float(ok.float().mean()) if reduction == "mean" else ok
