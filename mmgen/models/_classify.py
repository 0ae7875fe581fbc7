"""What the image classifiers (ViT, Swin) share: the training contract on {"image", "label"}
batches (cross-entropy with label smoothing, on-the-fly augmentation in training mode),
evaluation and example batches. Their configs carry num_classes, label_smoothing, augment,
in_chans and img_size."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Model

AUGMENTS = ("none", "flip", "crop", "crop_flip")


def augment_images(x: torch.Tensor, kind: str, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random translation by up to `pad` pixels (reflect padding, then a random
    crop back to size) and/or horizontal flip, on a batch (B, C, H, W)."""
    if kind not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {kind!r}")
    B, _, H, W = x.shape
    dev = x.device
    if "crop" in kind and pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H + 2p, W + 2p)
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
        rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        b = torch.arange(B, device=dev)[:, None, None, None]
        c = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = xp[b, c, rows, cols]  # (B, C, H, W)
    if "flip" in kind:
        flip = (torch.rand(B, generator=generator) < 0.5).to(dev)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
    return x


class ImageClassifier(Model):
    """loss / evaluate / example_batch for models whose forward maps images to logits."""

    def _check_classifier(self) -> None:
        if self.config.num_classes <= 0:
            raise ValueError(f"this {type(self).__name__} has no classifier head (num_classes=0): "
                             "it has no classification loss; reset_classifier(n) adds one")

    def _labels(self, batch, device) -> torch.Tensor:
        labels = torch.as_tensor(batch["label"], device=device)
        if labels.ndim != 1:
            raise ValueError(f"labels must be (batch,) class indices, got shape {tuple(labels.shape)}")
        return labels

    def loss(self, batch):
        """Cross-entropy (with the config's label smoothing) on {"image": (B, C, H, W), "label": (B,)};
        in training mode images are augmented first (config.augment)."""
        self._check_classifier()
        image = batch["image"]
        if self.training and self.config.augment != "none":
            image = augment_images(image, self.config.augment)
        logits = self(image)
        labels = self._labels(batch, logits.device)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": loss.item(), "acc": acc.item()}

    @torch.no_grad()
    def evaluate(self, batch) -> dict[str, float]:
        """Plain cross-entropy and top-1 accuracy on an unaugmented batch."""
        self._check_classifier()
        logits = self(batch["image"])
        labels = self._labels(batch, logits.device)
        return {"loss": F.cross_entropy(logits.float(), labels).item(),
                "acc": (logits.argmax(-1) == labels).float().mean().item()}

    def example_batch(self, batch_size: int = 2, device="cpu"):
        c = self.config
        g = torch.Generator().manual_seed(0)
        image = (torch.rand(batch_size, c.in_chans, c.img_size, c.img_size, generator=g) * 2 - 1).to(device)
        label = torch.randint(0, max(c.num_classes, 1), (batch_size,), generator=g).to(device)
        return {"image": image, "label": label}
