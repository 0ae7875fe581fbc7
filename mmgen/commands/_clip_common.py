"""Helpers shared by the CLIP subcommands (zero-shot, retrieve): load a CLIP checkpoint and
read image files into the model's input format."""
from __future__ import annotations

from pathlib import Path

import torch


def load_clip(checkpoint: str, device: str = "cpu"):
    import mmgen
    from mmgen.models.clip import CLIP
    model = mmgen.load_pretrained(checkpoint, map_location=device)
    if not isinstance(model, CLIP):
        raise ValueError(f"{checkpoint!r} holds a {model.model_type!r} model; this command needs a CLIP checkpoint")
    return model.eval()


def image_spec(model) -> tuple[tuple[int, int], int]:
    """((H, W), channels) the image tower expects."""
    vc = model.visual.config
    size = getattr(vc, "img_size", 32)
    size = (size, size) if isinstance(size, int) else tuple(size)
    return size, getattr(vc, "in_chans", 3)


def load_images(paths: list[str], size: tuple[int, int], channels: int) -> torch.Tensor:
    """Image files -> (N, C, H, W) float32 in [-1, 1], resized (bicubic) to `size`."""
    import numpy as np
    from PIL import Image
    if channels not in (1, 3):
        raise ValueError(f"can only read images for 1- or 3-channel towers, this one takes {channels}")
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"image {p!r} does not exist")
        try:
            img = Image.open(p)
            img.load()
        except Exception as e:  # PIL raises several types for unreadable files
            raise ValueError(f"cannot read {p!r} as an image: {e}") from None
        if img.mode in ("RGBA", "LA", "P"):  # composite transparency on white, as emoji are drawn
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BICUBIC)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        out.append(arr[None] if channels == 1 else arr.permute(2, 0, 1))  # (C, H, W)
    return torch.stack(out)


def split_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return items


def dataset_kwargs(dataset: str, split: str, pairs: list[str]) -> dict:
    """--data-set KEY=VALUE pairs for build_dataset, plus what a split needs: the shapes
    `heldout_*` splits hold the default held-out colour-shape pairs (the ones the shapes
    recipes train without) unless --data-set holdout=... says otherwise."""
    kw = parse_kv(pairs)
    if dataset == "shapes" and split.startswith("heldout") and kw.get("holdout") is None:
        kw["holdout"] = "default"
    return kw


def parse_kv(pairs: list[str]) -> dict:
    """["holdout=default", "length=100"] -> {"holdout": "default", "length": 100} (JSON values
    where they parse, else strings)."""
    import json
    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise ValueError(f"expected KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
