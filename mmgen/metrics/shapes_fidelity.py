"""Does a text-to-image model draw the shapes scene its prompt asks for? The strict shapes
checker (mmgen.data.shapes.check) on fixed prompt groups, attribute by attribute:

  one      single-object captions of the test split ("a red circle")
  two      two-object captions of the test split, every colour-shape pair seen in training
  heldout  two-object captions of heldout_test: one object is a held-out colour-shape pair

`split="val"` draws the same groups from val / heldout_val: the prompts to choose sampling
settings on, so that the test figures are not tuned on the test prompts.

Works with any pipeline (DALL-E, DDPM) called as pipe(prompts, num_images=1, candidates=k,
seed=..., guidance=...). "extra" is the share of images holding an object the prompt did not
ask for (more objects found than named: the hallucination rate measured on images);
"axis" and "order" split the relation's failures: over the two-object images whose objects
have the asked colours and shapes, the share placed on the asked axis, and of those, the share
with the object named first on the asked side;
"clean" is the share of background pixels (outside every found object's box grown by one
pixel, the antialiased edge) whose brightest channel is below 8/255: residual noise and
faint blobs in the black background lower it.

    from mmgen.metrics.shapes_fidelity import prompt_groups, fidelity
    for row in fidelity(load_pipeline("dalle_shapes"), prompt_groups(200), candidates=(1, 8)):
        print(row)
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

GROUPS = ("one", "two", "heldout")
PROMPT_SPLITS = ("test", "val")
ATTRIBUTES = ("count", "colour", "shape", "relation", "axis", "order", "correct", "extra", "clean")
DARK = 8 / 255  # a background pixel is clean when its brightest channel is below this


def prompt_groups(n: int = 200, groups: Iterable[str] = GROUPS, holdout="default",
                  split: str = "test") -> dict[str, list[str]]:
    """The first n captions of each group (fixed: the splits are pure functions of the index),
    from the test splits or, with split="val", from the validation splits."""
    from ..data import build_dataset
    if split not in PROMPT_SPLITS:
        raise ValueError(f"prompt split must be one of {PROMPT_SPLITS}, got {split!r}")
    out = {}
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"prompt group must be one of {GROUPS}, got {group!r}")
        ds_split = f"heldout_{split}" if group == "heldout" else split
        ds = build_dataset("shapes", split=ds_split, holdout=holdout, length=100_000)
        want_two = group != "one"
        captions, i = [], 0
        while len(captions) < n:
            _, relation, caption = ds.scene(i)
            if (relation is not None) == want_two:
                captions.append(caption)
            i += 1
        out[group] = captions
    return out


def score(images, captions) -> dict[str, float]:
    """Attribute shares of images (N, 3, H, W) in [-1, 1] against their captions; relation
    over two-object captions only, "extra" = more objects found than the caption names."""
    from ..data.shapes import OPPOSITE, check, detect
    checks, extra, dark, background = [], [], 0, 0
    for image, caption in zip(images, captions):
        found = detect(image)
        c = check(image, caption, found=found)
        checks.append(c)
        extra.append(len(found) > len(c["expected"]["objects"]))
        d, n = background_dark(image, found)
        dark, background = dark + d, background + n
    out = {k: float(np.mean([c[k] for c in checks])) for k in ("count", "colour", "shape", "correct")}
    rel = [c["relation"] for c in checks if c["relation"] is not None]
    out["relation"] = float(np.mean(rel)) if rel else None
    # where a relation fails: among two-object images whose objects have the asked colours and
    # shapes, the share drawn on the asked axis (vertical / horizontal), and among those, the
    # share with the object named first on the asked side
    placed = [(c["drawn_relation"], c["expected"]["relation"]) for c in checks
              if c["expected"]["relation"] is not None and c["colour"] and c["shape"]]
    on_axis = [(d, r) for d, r in placed if d in (r, OPPOSITE[r])]
    out["axis"] = len(on_axis) / len(placed) if placed else None
    out["order"] = float(np.mean([d == r for d, r in on_axis])) if on_axis else None
    out["extra"] = float(np.mean(extra))
    out["clean"] = dark / background if background else None
    return out


def background_dark(image, found: list[dict]) -> tuple[int, int]:
    """(dark background pixels, background pixels) of one image (3, H, W) in [-1, 1]: the
    background is everything outside the found objects' boxes grown by one pixel."""
    bright = (image.float().clamp(-1, 1) + 1).amax(0) / 2  # (H, W) brightest channel in [0, 1]
    H, W = bright.shape
    background = np.ones((H, W), dtype=bool)
    for o in found:
        x0, y0, x1, y1 = o["bbox"]
        background[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False
    dark = (bright.cpu().numpy() < DARK) & background
    return int(dark.sum()), int(background.sum())


def fidelity(pipe, groups: dict[str, list[str]], *, candidates: Iterable[int] = (1,), seed: int = 0,
             progress=False, **sample_kwargs) -> Iterator[dict]:
    """One row per (candidates, group), yielded as soon as it is measured: the attribute shares
    of one image per prompt, the best of `candidates` by the pipeline's CLIP when
    candidates > 1, and the sampling wall time. Every group is measured with the fewest
    candidates before any with more (the cheap figures first)."""
    from ..pipelines.base import to_float
    for k in candidates:
        for group, captions in groups.items():
            t0 = time.time()
            out = pipe(captions, num_images=1, candidates=k, rerank=k > 1, seed=seed, progress=progress,
                       **sample_kwargs)
            images = to_float(out.images[:, 0])
            yield {"group": group, "n": len(captions), "candidates": k, "seed": seed,
                   **{a: v if v is None else round(v, 4) for a, v in score(images, captions).items()},
                   "wall_s": round(time.time() - t0, 1)}
