"""Does a text-conditional shapes DDPM read its caption, and the relation in it? One JSON line
per checkpoint (mmgen.metrics.text_use): the denoising loss on the first N shapes test images
at seeded noise and timesteps with the true captions, the batch's captions shuffled, empty
captions and, over the two-object images, each relation reversed ("above" <-> "below"); and
the largest relative change of the text encoder's token states when "above" becomes "below"
in "a red circle above a blue square", against "red" -> "green".

    python scripts/text_use.py checkpoints/ddpm_shapes runs/ddpm_shapes_2h_snaps/2420 --t-min 300 --t-max 700
"""
from __future__ import annotations

import json
import sys

import torch

from mmgen.commands._args import OneLineParser, positive_int


def main(argv=None) -> int:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.metrics.text_use import text_use
    from mmgen.pipelines.paths import find_checkpoint
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="text-conditional DDPM checkpoints (shipped names or directories)")
    ap.add_argument("--n", type=positive_int, default=256, help="test images")
    ap.add_argument("--t-min", type=int, default=0, help="timesteps are drawn from [t-min, t-max)")
    ap.add_argument("--t-max", type=int, default=1000)
    ap.add_argument("--space", choices=("eps", "x0"), default="eps",
                    help="the error of the implied noise (the usual loss) or of the implied clean image")
    args = ap.parse_args(argv)
    if not 0 <= args.t_min < args.t_max:
        ap.error(f"need 0 <= --t-min < --t-max, got {args.t_min}, {args.t_max}")
    ds = build_dataset("shapes", "test", holdout="default")
    items = [ds[i] for i in range(args.n)]
    images = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    for ckpt in args.checkpoints:
        try:
            model = mmgen.load_pretrained(find_checkpoint(ckpt)).eval()
        except (ValueError, TypeError, FileNotFoundError) as e:
            ap.error(str(e))
        if model.model_type != "ddpm" or model.config.conditioning != "text":
            ap.error(f"{ckpt!r} is not a text-conditional DDPM")
        t_range = (args.t_min, min(args.t_max, model.config.num_train_timesteps))
        row = text_use(model, images, captions, t_range, space=args.space)
        print(json.dumps({"checkpoint": ckpt, "t": list(t_range), "n": args.n, "space": args.space,
                          **{k: v if v is None else round(v, 6) for k, v in row.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
