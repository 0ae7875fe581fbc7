"""Do held-out colour-shape pairs need image tokens a DALL-E never saw in training?

Encodes training scenes (the default held-out pairs removed, as the shapes DALL-E recipes
train) with a VQ tokenizer and counts each code among the tokens that touch an object. Then
renders objects of the test split (seen pairs) and of heldout_test (held-out pairs) alone and
reports how often their object tokens' codes occur in training. If held-out objects needed
rare or unseen codes, no transformer could draw them; if their codes are as common as those of
seen objects, what fails is binding colour to shape, not the vocabulary.

    python scripts/vq_token_coverage.py --vq vq_shapes_16x16 --n-train 20000
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

import mmgen
from mmgen.data.shapes import DEFAULT_HOLDOUT, ShapesDataset, _to_float, render


def object_tokens(vq, images: torch.Tensor) -> torch.Tensor:
    """Codes of the tokens whose image patch holds a lit pixel, flattened."""
    tokens = torch.cat([vq.encode_tokens(images[i:i + 256]) for i in range(0, len(images), 256)])  # (B, h, w)
    lit = (images.amax(1, keepdim=True) > -0.9).float()  # (B, 1, H, W): any channel above ~5/255
    patch = images.shape[-1] // tokens.shape[-1]
    return tokens[torch.nn.functional.max_pool2d(lit, patch)[:, 0].bool()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vq", default="vq_shapes_16x16", help="a VQ checkpoint (shipped name or directory)")
    ap.add_argument("--n-train", type=int, default=20000, help="training scenes to count codes on")
    ap.add_argument("--n-objects", type=int, default=1000, help="objects per group to score")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    vq = mmgen.load_pretrained(args.vq).eval()
    if vq.model_type != "vq":
        ap.error(f"--vq must be a VQ checkpoint, got a {vq.model_type!r} one")

    train = ShapesDataset("train", holdout="default")
    counts = np.zeros(vq.codebook_size, np.int64)
    for start in range(0, args.n_train, 1000):
        images = torch.stack([train[i]["image"] for i in range(start, min(start + 1000, args.n_train))])
        counts += np.bincount(object_tokens(vq, images).numpy(), minlength=vq.codebook_size)
    print(json.dumps({"train_scenes": args.n_train, "object_tokens": int(counts.sum()),
                      "codes_used": int(np.count_nonzero(counts))}))

    for split, held in (("test", False), ("heldout_test", True)):
        ds = ShapesDataset(split, holdout="default")
        objects = [o for i in range(len(ds)) for o in ds.scene(i)[0]
                   if ((o["colour"], o["shape"]) in DEFAULT_HOLDOUT) == held][:args.n_objects]
        images = torch.stack([_to_float(render([o])) for o in objects])
        seen = counts[object_tokens(vq, images).numpy()]  # how often each of their codes occurs in training
        print(json.dumps({"objects": f"{split}, {'held-out' if held else 'seen'} pairs", "n": len(objects),
                          "tokens": int(seen.size), "never_in_training": float(np.mean(seen == 0)),
                          "under_100": float(np.mean(seen < 100)), "median_count": float(np.median(seen))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
