"""Datasets, caption templates and tokenising collates.

    >>> from mmgen.data import build_dataset, list_datasets
    >>> ds = build_dataset("animal_mnist", split="train")      # offline CIFAR-10 stand-in
    >>> item = ds[0]   # {"image": (C, H, W) float32 in [-1, 1], "label": int, "caption": str}
    >>> ds.classes[:3]

Image datasets: cifar10, cifar100, animal_mnist, mnist5k, emoji, shapes.
Text datasets: shakespeare, text (a user file), captions (the caption corpus of an image set),
each yielding ``{"input_ids": (T,), "labels": (T,)}`` blocks of byte tokens.
Synthetic language tasks: icl (in-context learning of a random function per sequence),
arithmetic (addition / multiplication, plain or with a scratchpad); see lm_tasks.py.
See docs/data.md for sizes, licences and split rules.
"""
from __future__ import annotations

import importlib

from .collate import CaptionCollate, caption_collate, tokenize_captions

# name -> (module, builder); modules are imported lazily so `import mmgen.data` stays cheap
_DATASETS = {
    "cifar10": ("cifar", "cifar10"),
    "cifar100": ("cifar", "cifar100"),
    "animal_mnist": ("animal_mnist", "animal_mnist"),
    "mnist5k": ("mnist5k", "mnist5k"),
    "emoji": ("emoji", "emoji"),
    "shapes": ("shapes", "shapes"),
    "shakespeare": ("text", "shakespeare"),
    "text": ("text", "text_file"),
    "captions": ("text", "captions"),
    "icl": ("lm_tasks", "icl"),
    "arithmetic": ("lm_tasks", "arithmetic"),
}

_ALIASES = {"animal-mnist": "animal_mnist", "mnist_5k": "mnist5k", "mnist-5k": "mnist5k",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}

SPLITS = ("train", "val", "test")


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return sorted(_DATASETS)


def build_dataset(name: str, split: str = "train", **kwargs):
    """Build dataset ``name`` for ``split`` ("train" | "val" | "test"; shapes also
    "heldout_val" / "heldout_test"). Extra keyword arguments go to the dataset's builder
    (e.g. ``root=``, ``download=True`` for CIFAR, ``image_size=``, ``channels=``,
    ``transform=``, ``holdout=[("red", "circle")]`` for shapes, ``path=`` for text)."""
    key = _ALIASES.get(name, name)
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list_datasets()}")
    module, fn = _DATASETS[key]
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, fn)(split=split, **kwargs)


__all__ = ["build_dataset", "list_datasets", "SPLITS", "CaptionCollate", "caption_collate",
           "tokenize_captions"]
