"""Exact evaluation of an image classifier (ViT, Swin, ResNet) over a whole labelled split
(`mmgen classify`; the vision curve's final accuracies)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_classifier(model, dataset, batch_size: int = 256, device="cpu") -> dict[str, float]:
    """Exact top-1 accuracy and mean cross-entropy of `model` over every item of `dataset`
    (items {"image": (C, H, W), "label": int})."""
    model.eval().to(device)
    correct, total, nll = 0, 0, 0.0
    for lo in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]
        image = torch.stack([it["image"] for it in items]).to(device)
        label = torch.as_tensor([it["label"] for it in items], device=device)
        logits = model(image).float()
        nll += F.cross_entropy(logits, label, reduction="sum").item()
        correct += (logits.argmax(-1) == label).sum().item()
        total += len(items)
    return {"acc": correct / total, "loss": nll / total, "n": total}
