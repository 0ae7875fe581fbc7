"""Evaluate a trained VAE / VQ checkpoint on a whole dataset split and write PNG grids.

    python scripts/ae_report.py runs/vq_shapes --data shapes --split test --png docs/img/vq_shapes
    python scripts/ae_report.py runs/vq_emoji --data emoji --data-set image_size=32 --png docs/img/vq_emoji

Prints one JSON line: PSNR (dB, posterior-mean / argmin-token reconstructions, images on
[0, 1]), MSE, and for a VAE the bits/dim of the negative ELBO (one seeded posterior sample,
discretised 8-bit likelihood) with its reconstruction and KL parts; for a VQ / dVAE the
share of the codebook used over all test tokens ("usage") and the perplexity of the code
histogram. PNGs: <png>_recon.png (rows of originals over their reconstructions) and, for a
VAE, <png>_samples.png (prior samples) and <png>_interp.png (slerp between test pairs).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from mmgen.commands._args import OneLineParser, key_value


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from PIL import Image
    from torchvision.utils import make_grid
    grid = make_grid(images.float().clamp(-1, 1) * 0.5 + 0.5, nrow=nrow, padding=1, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype("uint8")
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, optimize=True)


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="a build_dataset keyword argument, e.g. image_size=32 (repeatable)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0 = all)")
    ap.add_argument("--png", default="", help="path prefix for the PNG grids (empty = none)")
    ap.add_argument("--n", type=int, default=16, help="images per grid row")
    args = ap.parse_args(argv)

    import mmgen
    from mmgen.data import build_dataset
    from mmgen.models.vae import VAE
    from mmgen.models.vq import codebook_stats
    torch.manual_seed(0)
    model = mmgen.load_pretrained(args.checkpoint).eval()
    ds = build_dataset(args.data, split=args.split, **dict(args.data_set))
    n = len(ds) if not args.limit else min(args.limit, len(ds))
    sums: dict[str, float] = {}
    tokens = []
    first = None
    checks, confusion = [], None  # shapes only: what the strict checker reads back from reconstructions
    if args.data == "shapes":
        from mmgen.data import shapes as S
    for start in range(0, n, args.batch_size):
        images = torch.stack([ds[i]["image"] for i in range(start, min(start + args.batch_size, n))])
        if first is None:
            first = images
        logs = model.evaluate({"image": images})
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v * images.shape[0]
        if not isinstance(model, VAE):
            tokens.append(model.encode_tokens(images))
        if args.data == "shapes":
            with torch.no_grad():
                rec = model.reconstruct(images)
            idx = range(start, start + images.shape[0])
            scenes = [ds.scene(i) for i in idx]
            checks += [S.check(r, c) for r, (_, _, c) in zip(rec, scenes)]
            m = S.confusion(list(rec), scenes)
            confusion = m if confusion is None else confusion + m
    out = {k: v / n for k, v in sums.items()}
    out.pop("usage", None), out.pop("perplexity", None)  # per-batch figures; the split-wide ones follow
    if tokens:
        out.update(codebook_stats(torch.cat(tokens), model.codebook_size))
    out = {"checkpoint": args.checkpoint, "data": args.data, "split": args.split, "images": n,
           **{k: round(v, 4) for k, v in out.items()}}
    if checks:  # the reconstruction ceiling: no generator on this tokenizer can draw better
        for k in ("count", "colour", "shape", "correct"):
            out[f"recon_{k}"] = round(float(np.mean([c[k] for c in checks])), 4)
        out["recon_relation"] = round(float(np.mean([c["relation"] for c in checks if c["relation"] is not None])), 4)
    print(json.dumps(out))
    if confusion is not None:
        print(S.format_confusion(confusion))
    if args.png:
        k = args.n
        x = first[:k]
        with torch.no_grad():
            rec = model.reconstruct(x)
        save_grid(torch.cat([x, rec]), Path(f"{args.png}_recon.png"), nrow=k)
        if isinstance(model, VAE):
            save_grid(model.sample(2 * k, seed=0), Path(f"{args.png}_samples.png"), nrow=k)
            m = min(4, first.shape[0] // 2)
            path = model.interpolate(first[:m], first[m:2 * m], steps=k)  # (m, k, C, H, W)
            save_grid(path.flatten(0, 1), Path(f"{args.png}_interp.png"), nrow=k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
