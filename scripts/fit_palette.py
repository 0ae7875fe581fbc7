"""Fit the factorised palette tokenizer (mmgen.models.palette) by k-means on training images
and save it as a checkpoint.

    python scripts/fit_palette.py --out checkpoints/palette_shapes        # shapes train, held-out pairs excluded
    python scripts/ae_report.py checkpoints/palette_shapes --data shapes --split test

The images are the first --n items of the split, built with the same dataset options as the
DALL-E that will read the tokens (by default the shapes train split without the default
held-out colour-shape pairs, so the tokenizer never sees a held-out pair either).
"""
from __future__ import annotations

import json
import sys
import time

import torch

from mmgen.commands._args import OneLineParser, key_value, positive_int


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--preset", default="palette_32")
    ap.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="a config field, e.g. silhouettes=128 (repeatable)")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--split", default="train")
    ap.add_argument("--data-set", type=key_value, action="append", default=[("holdout", "default")], metavar="KEY=VALUE",
                    help='a build_dataset keyword argument (repeatable; default holdout="default")')
    ap.add_argument("--n", type=positive_int, default=5000, help="images to fit on")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import mmgen
    from mmgen.data import build_dataset
    from mmgen.models.palette import PaletteTokenizer

    t0 = time.time()
    config = mmgen.create_model(args.preset, **dict(args.set)).config
    ds = build_dataset(args.data, split=args.split, **dict(args.data_set))
    n = min(args.n, len(ds))
    images = torch.stack([ds[i]["image"] for i in range(n)])
    tok = PaletteTokenizer.fit(images, config, seed=args.seed)
    tok.preset_name = args.preset
    path = tok.save_pretrained(args.out)
    print(json.dumps({"out": str(path), "images": n, "silhouettes": config.silhouettes, "colours": config.colours,
                      "colour_codes": [[round(v, 3) for v in row] for row in tok.colour_codes.tolist()],
                      "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
