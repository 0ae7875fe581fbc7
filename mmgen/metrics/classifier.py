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


@torch.no_grad()
def class_predictions(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The classifier's top-1 class (N,) for images (N, C, H, W)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        return torch.cat([model(images[i:i + batch_size].to(dev).float()).argmax(-1).cpu()
                          for i in range(0, images.shape[0], batch_size)])
    finally:
        model.train(was)


def class_agreement(model, images: torch.Tensor, labels, batch_size: int = 256,
                    class_names=None) -> float | dict:
    """The share of `images` (N, C, H, W) that the classifier `model` assigns to the class each
    was made for (`labels`, N ints): how recognisable class-conditional samples are to a
    classifier trained on the real images. Run it on real test images too: that is the ceiling.
    With class_names: {"all": share, name: share of that class's images, ...}."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"need one label per image, got {tuple(labels.shape)} labels for {images.shape[0]} images")
    hit = (class_predictions(model, images, batch_size) == labels).float()
    if class_names is None:
        return hit.mean().item()
    return {"all": hit.mean().item(), **{name: hit[labels == c].mean().item()
                                         for c, name in enumerate(class_names) if (labels == c).any()}}
