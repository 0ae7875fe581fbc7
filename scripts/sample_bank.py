"""Build a bank of generator samples for training a reranker that knows the generator's
failures: for items 0..n-1 of the shapes train split, the scene's VQ reconstruction (what a
correct sample looks like after the same decoder) and one DALL-E sample for its caption.

    python scripts/sample_bank.py --model dalle_shapes --n 6000 --out runs/shapes_sample_bank.safetensors

A generator that is often right gives negatives that are really positives: with
``--replace-correct`` a sample the strict checker finds all correct is replaced by the scene
with one object distorted (``render_distorted``: stretched, bumped or merged), so every
negative image is wrong for its caption. Each item's checker verdict is kept in the file's
metadata ("sample_correct") either way.

`ShapesDataset(sample_bank=PATH)` serves the reconstruction as the image and the sample as
its hard-negative image (recipe clip_shapes_coca_bank). Only train scenes are read, never
val or test. The file is rewritten (atomically) after every chunk and a rerun with the same
arguments continues where a killed run stopped.
"""
from __future__ import annotations

import json
import sys
import time

import torch

from mmgen.commands._args import OneLineParser, positive_int


@torch.no_grad()  # restored on return: main() is also called inside other programs (tests)
def main(argv=None) -> int:
    from safetensors.torch import save_file

    from mmgen.checkpoint import atomic_save_file
    import numpy as np

    from mmgen.data.shapes import ShapesDataset, check, load_sample_bank, render_distorted
    from mmgen.pipelines import load_pipeline
    from mmgen.pipelines.base import to_uint8
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dalle_shapes", help="a shipped name or a DALL-E checkpoint directory")
    ap.add_argument("--n", type=positive_int, default=6000, help="train items (one sample each)")
    ap.add_argument("--out", required=True, help="the bank file (.safetensors)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (chunk k samples with seed + k)")
    ap.add_argument("--chunk", type=positive_int, default=512, help="items per chunk (one file write each)")
    ap.add_argument("--replace-correct", action="store_true",
                    help="replace a sample the strict checker finds all correct by a distorted render of its scene")
    args = ap.parse_args(argv)
    try:
        pipe = load_pipeline(args.model)
    except (ValueError, TypeError, FileNotFoundError) as e:
        ap.error(str(e))
    if pipe.kind != "dalle":
        ap.error(f"{args.model!r} is a {pipe.kind} model; the bank holds DALL-E samples")
    ds = ShapesDataset("train", holdout="default", length=args.n)  # the DALL-E's and the CLIP's training split
    meta = {"model": args.model, "seed": ds.seed, "holdout": sorted(map(list, ds.holdout)), "p_two": ds.p_two,
            "sample_seed": args.seed, "chunk": args.chunk, "replace_correct": args.replace_correct}
    real, generated, captions, correct = [], [], [], []

    def save():
        tensors = {"real": torch.cat(real).contiguous(), "generated": torch.cat(generated).contiguous()}
        file_meta = {"meta": json.dumps({**meta, "captions": captions, "sample_correct": correct})}
        atomic_save_file(lambda p: save_file(tensors, p, metadata=file_meta), args.out)

    trimmed = False
    try:
        old = load_sample_bank(args.out)
        if {k: old["meta"].get(k) for k in meta} == meta:
            n = min(args.n, len(old["meta"]["captions"]))  # a larger bank's prefix is this one's start
            real, generated, captions = [old["real"][:n]], [old["generated"][:n]], old["meta"]["captions"][:n]
            correct = old["meta"]["sample_correct"][:n]
            trimmed = n < len(old["meta"]["captions"])
            print(f"continuing {args.out}: {n} of {args.n} items there", flush=True)
    except FileNotFoundError:
        pass
    t0 = time.time()
    for start in range(len(captions) // args.chunk * args.chunk, args.n, args.chunk):
        if start < len(captions):  # a partial last chunk of an older run: redo it whole
            real, generated, captions = [torch.cat(real)[:start]], [torch.cat(generated)[:start]], captions[:start]
            correct = correct[:start]
        items = [ds[i] for i in range(start, min(start + args.chunk, args.n))]
        chunk_captions = [it["caption"] for it in items]
        images = torch.stack([it["image"] for it in items]).to(pipe.vq.device)  # (b, 3, H, W) in [-1, 1]
        real.append(to_uint8(pipe.vq.reconstruct(images)))
        out = pipe(chunk_captions, num_images=1, candidates=1, rerank=False, seed=args.seed + start // args.chunk)
        samples = out.images[:, 0].clone()  # (b, 3, H, W) uint8
        verdicts = [check(im.permute(1, 2, 0).numpy(), c)["correct"] for im, c in zip(samples, chunk_captions)]
        if args.replace_correct:
            for j, ok in enumerate(verdicts):
                if ok:  # the scene's own seeded distortion: a rerun draws the same one
                    rng = np.random.default_rng([args.seed, start + j, 3])
                    samples[j] = torch.from_numpy(render_distorted(ds.scene(start + j)[0], rng).copy()).permute(2, 0, 1)
        generated.append(samples)
        captions += chunk_captions
        correct += [int(ok) for ok in verdicts]
        save()
        print(f"{len(captions)}/{args.n} items, {time.time() - t0:.0f} s; samples all correct: "
              f"{sum(correct) / len(correct):.1%}" + (" (replaced by distorted renders)" if args.replace_correct else ""),
              flush=True)
    if trimmed:
        save()
    print(f"wrote {args.out}: {len(captions)} items", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
