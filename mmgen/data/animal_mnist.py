"""animal-mnist 0.4 (PyPI, MIT): 10,000 28x28 grey animal silhouettes, 10 classes x 1,000.

The offline stand-in for CIFAR-10: by default padded to 32x32 and repeated to 3 channels so
CIFAR-10 models run on it unchanged (``channels=1``, ``resize="resize"`` are options).
Splits: 8,000 / 1,000 / 1,000, stratified (800 / 100 / 100 per class), fixed seed; the
source holds 284 images twice (9,716 distinct), and both copies always share a split.
Install: ``pip install --no-deps animal-mnist==0.4`` (its declared deps pull TensorFlow).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from functools import lru_cache

import numpy as np

from .base import ImageArrayDataset, convert_images, default_caption_mode, split_indices
from .captions import ANIMAL_MNIST_CLASSES, CIFAR_TEMPLATES

SIZE = 10_000
FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")


def data_dir() -> str:
    # find_spec locates the package without importing it (its __init__ pulls TensorFlow deps)
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("animal-mnist is not installed: run `pip install --no-deps animal-mnist==0.4`")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "Animal_MNIST")


@lru_cache(maxsize=1)
def load_raw() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (10000, 28, 28), labels int64 (10000,)) from the package's gzip pickles.
    These pickles ship inside a pinned PyPI wheel (numpy arrays only)."""
    d = data_dir()
    paths = [os.path.join(d, f) for f in FILES]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"animal-mnist file missing: {p}; reinstall with "
                                    f"`pip install --no-deps --force-reinstall animal-mnist==0.4`")
    with gzip.open(paths[0], "rb") as f:
        x = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(paths[1], "rb") as f:
        y = np.asarray(pickle.load(f), dtype=np.int64)
    if x.shape != (SIZE, 28, 28) or y.shape != (SIZE,):
        raise ValueError(f"unexpected animal-mnist arrays {x.shape}, {y.shape}; expected (10000, 28, 28), (10000,)")
    return x, y


def animal_mnist(split: str = "train", *, image_size: int = 32, channels: int = 3, resize: str = "pad",
                 transform=None, caption_mode=None) -> ImageArrayDataset:
    x, y = load_raw()
    # 284 images occur twice in the source: duplicates are grouped into the same split
    groups = [x[i].tobytes() for i in range(len(x))]
    idx = split_indices(len(y), split, stratify=y, groups=groups)
    images = convert_images(x[idx], image_size, channels, resize)
    return ImageArrayDataset(images, y[idx], ANIMAL_MNIST_CLASSES, templates=CIFAR_TEMPLATES,
                             caption_mode=default_caption_mode(split, caption_mode), transform=transform,
                             name="animal_mnist", split=split)
