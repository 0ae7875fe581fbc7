"""Emoji: the 3,655 fully-qualified Unicode 15.0 emoji drawn by Noto Color Emoji, captioned
with their CLDR names ("grinning face", "waving hand: medium skin tone").

Ships in the package (mmgen/data/assets/, built once by scripts/build_emoji.py from
Debian's fonts-noto-color-emoji + unicode-data; artwork Apache-2.0, see
assets/EMOJI_LICENSE), so no apt and no network are needed.

* ``image_size=64`` (default) or ``32``: RGB composited on white. 64x64 is stored at 7 bits
  per channel (max error 1/255) to fit the repository budget; 32x32 is its 2x2 box average.
* label: one of the 9 emoji groups (``classes``: "Smileys & Emotion", ..., "Flags").
* caption: the CLDR name (``caption_prefix="an emoji of "`` prepends text if wanted).
* splits 80 / 10 / 10 by *base* emoji (the code points without skin-tone modifiers), so all
  skin-tone variants of one emoji fall in the same split; fixed seed.
"""
from __future__ import annotations

import io
import json
import lzma
import os
from functools import lru_cache

import numpy as np

from .base import ImageArrayDataset, convert_images, split_indices

ASSETS = os.path.join(os.path.dirname(__file__), "assets")


@lru_cache(maxsize=1)
def load_meta() -> dict:
    path = os.path.join(ASSETS, "emoji.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"emoji assets missing ({path}); rebuild with `python scripts/build_emoji.py` "
                                f"after `apt-get install -y fonts-noto-color-emoji unicode-data`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=2)
def load_images(image_size: int = 64) -> np.ndarray:
    """uint8 (N, S, S, 3) for S in (64, 32)."""
    if image_size not in (32, 64):
        raise ValueError(f"emoji image_size must be 32 or 64 (or pass resize to convert), got {image_size}")
    if image_size == 32:
        x = load_images(64).reshape(-1, 32, 2, 32, 2, 3).astype(np.uint16)  # (N, 32, 2, 32, 2, 3)
        x = ((x.sum((2, 4)) + 2) // 4).astype(np.uint8)  # 2x2 box average, rounded
        x.setflags(write=False)
        return x
    meta = load_meta()
    path = os.path.join(ASSETS, meta["image_file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"emoji image file missing: {path}; rebuild with `python scripts/build_emoji.py`")
    with open(path, "rb") as f:
        q = np.load(io.BytesIO(lzma.decompress(f.read())), allow_pickle=False)  # (N, 64, 64, 3)
    qmax = meta["quantization_max"]
    lut = np.round(np.arange(256) * 255 / qmax).clip(0, 255).astype(np.uint8)
    x = lut[q]
    x.setflags(write=False)
    return x


def emoji(split: str = "train", *, image_size: int = 64, transform=None, caption_prefix: str = "",
          channels: int = 3) -> ImageArrayDataset:
    meta = load_meta()
    idx = split_indices(len(meta["name"]), split, groups=meta["base"])
    src = 64 if image_size not in (32, 64) else image_size
    images = load_images(src)[idx]
    if image_size != src or channels != 3:
        images = convert_images(images, image_size, channels, resize="resize")
    captions = [caption_prefix + meta["name"][i] for i in idx]
    ds = ImageArrayDataset(images, np.asarray(meta["group"])[idx], meta["groups"], captions=captions,
                           transform=transform, name="emoji", split=split)
    ds.emoji = [meta["emoji"][i] for i in idx]
    ds.base = [meta["base"][i] for i in idx]
    return ds
