"""CIFAR-10 / CIFAR-100 through torchvision, offline unless the user asks to download.

Splits: ``train`` = 90% of the official training set (45,000 images, stratified, fixed
seed), ``val`` = the other 10% (5,000), ``test`` = the official test set (10,000).

``root`` defaults to ``$MMGEN_DATA_ROOT`` or ``~/.cache/mmgen/data`` and must contain the
extracted ``cifar-10-batches-py`` / ``cifar-100-python`` folder. Nothing is downloaded unless
``download=True`` (``build_dataset("cifar10", root=..., download=True)``, ~170 MB). Missing
files raise ``FileNotFoundError`` naming the root and the flag.

``check_md5=False`` loads a local copy whose files differ from the official ones (a subset,
a fake written in the same pickle format for tests): torchvision then only checks that the
files exist. Like torchvision, this unpickles the batch files, so only point it at files
you made or trust.
"""
from __future__ import annotations

import os

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from .base import ImageArrayDataset, convert_images, default_caption_mode, split_indices
from .captions import CIFAR10_CLASSES, CIFAR_TEMPLATES

FOLDERS = {"cifar10": CIFAR10.base_folder, "cifar100": CIFAR100.base_folder}
TRAIN_VAL_FRACTIONS = (0.9, 0.1, 0.0)


def default_root() -> str:
    return os.environ.get("MMGEN_DATA_ROOT", os.path.expanduser("~/.cache/mmgen/data"))


def _without_md5(base):
    """A torchvision CIFAR class that accepts local files with any checksum."""
    return type(f"Local{base.__name__}", (base,), {
        "train_list": [[name, None] for name, _ in base.train_list],
        "test_list": [[name, None] for name, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    })


def _missing_message(name: str, root: str, detail: str = "") -> str:
    return (f"{name.upper()} not found under root={root!r} (expected the extracted folder "
            f"{os.path.join(root, FOLDERS[name])}){detail}. Pass download=True to fetch it, e.g. "
            f"build_dataset({name!r}, root={root!r}, download=True), or set MMGEN_DATA_ROOT / root= "
            f"to where it lives. Offline? Use the stand-in build_dataset('animal_mnist').")


def load_torchvision(name: str, train: bool, root: str | None = None, download: bool = False,
                     check_md5: bool = True):
    base = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    root = os.path.expanduser(str(root if root is not None else default_root()))
    if not download and not os.path.isdir(os.path.join(root, FOLDERS[name])):
        raise FileNotFoundError(_missing_message(name, root))
    cls = base if check_md5 else _without_md5(base)
    try:
        return cls(root, train=train, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(_missing_message(
            name, root, f" or its files fail torchvision's md5 check ({e}); for a local "
                        f"non-official copy pass check_md5=False")) from e


def _cifar(name: str, split: str, *, root=None, download: bool = False, check_md5: bool = True,
           image_size: int = 32, channels: int = 3, resize: str = "resize", transform=None,
           caption_mode=None) -> ImageArrayDataset:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    tv = load_torchvision(name, split != "test", root, download, check_md5)
    data, targets = np.asarray(tv.data), np.asarray(tv.targets, dtype=np.int64)  # (N, 32, 32, 3)
    if split != "test":
        idx = split_indices(len(targets), split, TRAIN_VAL_FRACTIONS, stratify=targets)
        data, targets = data[idx], targets[idx]
    classes = CIFAR10_CLASSES if name == "cifar10" else [c.replace("_", " ") for c in tv.classes]
    if name == "cifar10" and list(tv.classes) != CIFAR10_CLASSES:
        raise ValueError(f"CIFAR-10 meta lists classes {tv.classes}, expected {CIFAR10_CLASSES}")
    images = convert_images(data, image_size, channels, resize)
    return ImageArrayDataset(images, targets, classes, templates=CIFAR_TEMPLATES,
                             caption_mode=default_caption_mode(split, caption_mode),
                             transform=transform, name=name, split=split)


def cifar10(split: str = "train", **kw) -> ImageArrayDataset:
    """``build_dataset("cifar10", split, root=None, download=False, check_md5=True, ...)``."""
    return _cifar("cifar10", split, **kw)


def cifar100(split: str = "train", **kw) -> ImageArrayDataset:
    """``build_dataset("cifar100", split, root=None, download=False, check_md5=True, ...)``."""
    return _cifar("cifar100", split, **kw)
