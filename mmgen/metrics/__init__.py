"""Offline evaluation of image generators, with no Inception weights.

- `fd.py`: Fréchet distance and KID between feature sets, and `image_features` to extract
  them with one of *our* trained encoders. Figures from it are reported as FD_ours /
  KID_ours: they are comparable between runs that use the same encoder, never with
  Inception FID/KID figures.
- `clip_score.py`: CLIP score with our CLIP (100 x cosine of image and text embeddings), and
  caption retrieval (is an image's own prompt the CLIP's first choice among all prompts?).
- `fidelity.py`: prompt fidelity on the shapes dataset, read back by its rule-based checker.
- `clip_eval.py`: CLIP zero-shot classification, retrieval and linear probes.
- `classifier.py`: exact accuracy of an image classifier over a labelled split.
"""
from .clip_score import caption_retrieval, clip_score
from .fd import fd_kid, frechet_distance, gaussian_stats, image_features, kernel_inception_distance
from .fidelity import prompt_fidelity

__all__ = ["caption_retrieval", "clip_score", "fd_kid", "frechet_distance", "gaussian_stats", "image_features",
           "kernel_inception_distance", "prompt_fidelity"]
