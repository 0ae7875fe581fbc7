"""Prompt fidelity on the shapes dataset: the share of generated images in which the
rule-based checker `mmgen.data.shapes.check(image, caption)` reads back everything the
caption asked for (its `correct` field: object count, colours, shapes and the relation).
`mmgen.data.shapes.check_batch` gives the per-attribute rates."""
from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def prompt_fidelity(images: torch.Tensor, captions: Sequence[str], *, checker=None, reduction: str = "mean"):
    """images (N, C, H, W) in [-1, 1], one caption each -> the fraction the checker accepts
    (or a (N,) bool tensor with reduction='none'). `checker(image, caption)` returns a bool or
    a dict with "correct" (the shapes checker, the default)."""
    if len(captions) != images.shape[0]:
        raise ValueError(f"prompt_fidelity needs one caption per image: {images.shape[0]} images, "
                         f"{len(captions)} captions")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if checker is None:
        from ..data.shapes import check as checker
    results = [checker(img.float().cpu(), cap) for img, cap in zip(images, captions)]
    ok = torch.tensor([bool(r["correct"]) if isinstance(r, dict) else bool(r) for r in results])
    return float(ok.float().mean()) if reduction == "mean" else ok
