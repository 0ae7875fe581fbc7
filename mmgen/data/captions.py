"""Class names and caption templates (written here: open_clip does not ship them).

The 18 CIFAR-10 prompt templates and the CIFAR-10 class names are those the CLIP authors
published for CIFAR-10 (openai/CLIP, data/prompts.md); CLIP used the same 18 templates for
CIFAR-100. The MNIST template comes from the same file.
"""
from __future__ import annotations

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]

CIFAR_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
]

# animal-mnist 0.4: labels 0..9 are its README's classes in alphabetical order (checked by
# eye on a grid of samples per label).
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse",
                        "sheep", "zebra"]

MNIST_CLASSES = [str(i) for i in range(10)]
# CLIP's MNIST prompt (same file)
MNIST_TEMPLATES = ['a photo of the number: "{}".']

TEMPLATES = {"cifar10": CIFAR_TEMPLATES, "cifar100": CIFAR_TEMPLATES,
             "animal_mnist": CIFAR_TEMPLATES, "mnist5k": MNIST_TEMPLATES}


def class_captions(classes, templates=CIFAR_TEMPLATES) -> list[list[str]]:
    """``[[template.format(c) for template in templates] for c in classes]`` -- e.g. for a
    CLIP zero-shot classifier (average the text embeddings over templates)."""
    return [[t.format(c) for t in templates] for c in classes]


def caption_corpus(classes, templates=CIFAR_TEMPLATES) -> list[str]:
    """Every caption a templated dataset can produce (for pruning a BPE vocabulary)."""
    return [t.format(c) for c in classes for t in templates]
