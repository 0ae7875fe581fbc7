"""Shared pieces of the image datasets: deterministic splits and an in-memory uint8 dataset.

Every image dataset keeps its pixels as one uint8 array (N, H, W, C) after a one-off
size/channel conversion, and produces items ``{"image": float32 (C, H, W) in [-1, 1],
"label": int, "caption": str}``. A user ``transform`` (torchvision v2, e.g.
``v2.RandomHorizontalFlip()``) sees the uint8 (C, H, W) ``tv_tensors.Image`` before the
conversion to [-1, 1]; if it already returns a float tensor it is used as is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # the fixed seed behind every split in mmgen.data


def split_indices(n: int, split: str, fractions=(0.8, 0.1, 0.1), *, seed: int = SPLIT_SEED,
                  stratify: Sequence[int] | None = None, groups: Sequence | None = None) -> np.ndarray:
    """Indices of ``split`` ("train" | "val" | "test") in a deterministic partition of
    ``range(n)``.

    ``stratify`` (labels) splits every class with the same fractions. ``groups`` keeps the
    items sharing a group key (duplicate images, skin-tone variants of one emoji) in one
    split: groups are visited in a seeded random order and each goes to the first of val,
    test, train whose item quota it still fits, so the split sizes hit their quotas
    (``round(m * fraction)``) exactly whenever the group sizes allow. Sorted indices."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 numbers summing to 1 (train, val, test), got {fractions}")
    k = SPLITS.index(split)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int64) if stratify is None else np.asarray(stratify)
    if len(labels) != n or (groups is not None and len(groups) != n):
        raise ValueError(f"stratify/groups must have one entry per item ({n})")
    gkeys = list(range(n)) if groups is None else list(groups)
    out = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        members: dict = {}
        for i in idx:  # group -> item indices, first-seen order (deterministic)
            members.setdefault(gkeys[i], []).append(int(i))
        keys = list(members)
        m = len(idx)
        quota = [0, int(round(m * fractions[1])), 0]
        quota[2] = min(int(round(m * fractions[2])), m - quota[1])
        quota[0] = m - quota[1] - quota[2]
        left = list(quota)
        chosen = []
        for j in rng.permutation(len(keys)):
            g = members[keys[j]]
            for s in (1, 2, 0):
                if len(g) <= left[s]:
                    break
            else:
                s = 0
            left[s] -= len(g)
            if s == k:
                chosen.extend(g)
        out.append(np.asarray(chosen, dtype=np.int64))
    return np.sort(np.concatenate(out)).astype(np.int64)


def convert_images(images: np.ndarray, image_size: int | None = None, channels: int | None = None,
                   resize: str = "pad") -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 (N, S, S, channels).

    ``resize="pad"`` centres the image on a black S x S canvas (28 -> 32 keeps every pixel
    sharp), ``"resize"`` scales it (bilinear, antialiased). Grey -> RGB repeats the channel;
    RGB -> grey uses ITU-R 601 luma."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {tuple(images.shape)}")
    x = x.permute(0, 3, 1, 2)  # (N, C, H, W)
    c = x.shape[1]
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if channels == 3 and c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif channels == 1 and c == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    H, W = x.shape[-2:]
    if image_size is not None and (H, W) != (image_size, image_size):
        if resize == "pad":
            if H > image_size or W > image_size:
                raise ValueError(f"resize='pad' cannot shrink {H}x{W} to {image_size}; use resize='resize'")
            top, left = (image_size - H) // 2, (image_size - W) // 2
            x = F.pad(x, (left, image_size - W - left, top, image_size - H - top))
        elif resize == "resize":
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear",
                              antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"resize must be 'pad' or 'resize', got {resize!r}")
    return x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, S, S, C)


def to_model_range(img: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) -> float32 in [-1, 1]."""
    return img.float().div_(127.5).sub_(1.0)


class ImageArrayDataset(torch.utils.data.Dataset):
    """Items from an in-memory uint8 (N, H, W, C) array.

    Captions: ``captions`` (one string per item) or ``templates`` filled with the class
    name. ``caption_mode``: "random" (a fresh template per access, drawn from torch's RNG, so
    seeded by the training loop; the train default), "index" (template ``i % len(templates)``,
    deterministic; the val/test default) or an int (always that template).
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str], *,
                 captions: Sequence[str] | None = None, templates: Sequence[str] | None = None,
                 caption_mode: str | int = "index", transform=None, name: str = "", split: str = ""):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if captions is None and not templates:
            raise ValueError("give per-item captions or caption templates")
        if isinstance(caption_mode, str) and caption_mode not in ("random", "index"):
            raise ValueError(f"caption_mode must be 'random', 'index' or an int, got {caption_mode!r}")
        self.images = images  # (N, H, W, C) uint8
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self._captions = None if captions is None else list(captions)
        self.templates = list(templates) if templates else None
        self.caption_mode = caption_mode
        self.transform = transform
        self.name, self.split = name, split

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self):
        n, h, w, c = self.images.shape
        return (c, h, w)

    def caption(self, i: int) -> str:
        if self._captions is not None:
            return self._captions[i]
        name = self.classes[int(self.labels[i])].replace("_", " ")
        if self.caption_mode == "random":
            t = int(torch.randint(len(self.templates), ()))
        elif self.caption_mode == "index":
            t = i % len(self.templates)
        else:
            t = int(self.caption_mode)
        return self.templates[t].format(name)

    def captions(self) -> list[str]:
        """Every caption this split can produce (all templates x present classes, or the
        per-item captions): the caption corpus for text models / BPE pruning."""
        if self._captions is not None:
            return list(self._captions)
        return [t.format(self.classes[c].replace("_", " ")) for c in np.unique(self.labels)
                for t in self.templates]

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of length {len(self)}")
        i %= len(self)
        img = tv_tensors.Image(torch.from_numpy(self.images[i]).permute(2, 0, 1))  # (C, H, W) uint8
        if self.transform is not None:
            img = self.transform(img)
        image = to_model_range(img.as_subclass(torch.Tensor)) if img.dtype == torch.uint8 else \
            img.as_subclass(torch.Tensor)
        return {"image": image, "label": int(self.labels[i]), "caption": self.caption(i)}

    def label_counts(self) -> dict[int, int]:
        u, c = np.unique(self.labels, return_counts=True)
        return {int(a): int(b) for a, b in zip(u, c)}

    def __repr__(self):
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image={self.image_shape}, classes={len(self.classes)})")


def default_caption_mode(split: str, caption_mode):
    return caption_mode if caption_mode is not None else ("random" if split == "train" else "index")
