"""The colour stage of two-stage DALL-E sampling alone: real scenes' outlines (the palette
tokenizer's silhouette codes) are fixed and a factorised DALL-E draws only the colours, scored
by the strict shapes checker per prompt group (one JSON line per checkpoint and group).

    python scripts/colour_stage.py runs/dalle_shapes_factored --split val --n 100

With perfect outlines, what the colour stage gets wrong is all that is wrong: the figure is
the ceiling of two-stage sampling with this colour model. Prompt groups as in
mmgen.metrics.shapes_fidelity ("one", "two", "heldout"), the scenes behind their captions.
"""
from __future__ import annotations

import json
import sys

from mmgen.commands._args import OneLineParser, finite_float, positive_int


def scenes(group: str, n: int, split: str):
    """The first n (captions, images (n, 3, H, W)) of a prompt group, in shapes_fidelity's order."""
    import torch

    from mmgen.data import build_dataset
    ds = build_dataset("shapes", split=f"heldout_{split}" if group == "heldout" else split, holdout="default",
                       length=100_000)
    captions, images, i = [], [], 0
    while len(captions) < n:
        _, relation, caption = ds.scene(i)
        if (relation is not None) == (group != "one"):
            captions.append(caption)
            images.append(ds[i]["image"])
        i += 1
    return captions, torch.stack(images)


def main(argv=None) -> int:
    from mmgen.metrics.shapes_fidelity import GROUPS, PROMPT_SPLITS
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="factorised DALL-E checkpoint directories (image_factors)")
    ap.add_argument("--tokenizer", default="palette_shapes", help="the palette tokenizer that gives the outlines")
    ap.add_argument("--split", choices=PROMPT_SPLITS, default="val")
    ap.add_argument("--n", type=positive_int, default=100, help="scenes per group")
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    ap.add_argument("--guidance", type=finite_float, default=1.25)
    ap.add_argument("--top-k", type=positive_int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)

    import torch
    with torch.no_grad():
        return measure(args)


def measure(args) -> int:
    """Sample and score every checkpoint x group (under no_grad)."""
    import mmgen
    from mmgen.metrics.shapes_fidelity import score
    from mmgen.pipelines.dalle import sample_image_tokens
    from mmgen.text.sampling import SamplingParams, make_generator
    from mmgen.train.metrics import append_jsonl
    palette = mmgen.load_pretrained(args.tokenizer)
    colours = palette.factors[1]
    groups = {g: scenes(g, args.n, args.split) for g in args.groups}
    for path in args.checkpoints:
        model = mmgen.load_pretrained(path).eval()
        if tuple(model.config.image_factors) != tuple(palette.factors):
            raise SystemExit(f"{path}: image ids factorised as {list(model.config.image_factors)}, the tokenizer's as "
                             f"{list(palette.factors)}")
        for group, (captions, images) in groups.items():
            outlines = palette.encode_tokens(images) // colours  # (n, h, w) silhouette codes
            tokens = sample_image_tokens(model, model.tokenize(captions), guidance=args.guidance,
                                         params=SamplingParams(top_k=args.top_k), first_codes=outlines,
                                         generator=make_generator(args.seed, model.text_embed.weight.device))
            found = score(palette.decode_tokens(tokens), captions)
            record = {"checkpoint": str(path), "group": group, "split": args.split, "n": args.n,
                      **{k: v if v is None else round(v, 4) for k, v in found.items()}}
            print(json.dumps(record), flush=True)
            if args.log:
                append_jsonl(args.log, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
