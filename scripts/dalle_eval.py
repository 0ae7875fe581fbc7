"""Measure and ship the DALL-E checkpoints (the figures in docs/dalle.md and the model cards).

    # held-out shapes captions: checker all-attributes-correct rate, 1 candidate vs 8 reranked by CLIP
    python scripts/dalle_eval.py shapes --model checkpoints/dalle_shapes --n 200 --candidates 1 8
    # emoji: CLIP score of 1 candidate vs the best of 8
    python scripts/dalle_eval.py emoji --model checkpoints/dalle_emoji --n 200 --candidates 1 8
    # a training run -> a shipped checkpoint (fp16 weights, helper paths relative to checkpoints/)
    python scripts/dalle_eval.py ship runs/dalle_shapes checkpoints/dalle_shapes --vq ../vq_shapes --clip ../clip_shapes
    # any other mmgen checkpoint (VQ, CLIP) -> fp16 copy
    python scripts/dalle_eval.py copy RUN_DIR checkpoints/vq_shapes

Every figure is printed as one JSON line (and appended to --log when given).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mmgen  # noqa: E402


def _emit(record: dict, log: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def _gen_kwargs(args) -> dict:
    """Sampling options given on the command line (the others take the checkpoint's defaults)."""
    kw = dict(guidance_scale=args.guidance, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    return {k: (None if v == 0 and k in ("top_k", "top_p") else v) for k, v in kw.items() if v is not None}


def eval_shapes(args) -> None:
    from mmgen.data import build_dataset
    from mmgen.data.shapes import check_batch
    model = mmgen.load_pretrained(args.model)
    for split in args.splits:
        kw = {"holdout": "default"}
        ds = build_dataset("shapes", split=split, **kw)
        captions = [ds.scene(i)[2] for i in range(args.n)]
        if args.reference:  # the ceiling: the checker on the real images and on their VQ reconstructions
            real = torch.stack([ds[i]["image"] for i in range(args.n)])
            recon = model.vq.reconstruct(real.to(model.vq.device)).cpu()
            for name, ims in (("real", real), ("vq_recon", recon)):
                res = check_batch(ims, captions)
                _emit({"eval": "shapes", "reference": name, "split": split, "n": args.n,
                       **{k: round(v, 4) for k, v in res.items() if k != "n"},
                       "clip_score": None if model.clip is None else
                       round(float(model.clip_scores(ims, captions).clamp(min=0).mean()), 3)}, args.log)
        for cands in args.candidates:
            t0 = time.time()
            images, scores = model.generate(captions, num_images=1, num_candidates=cands, rerank=cands > 1,
                                            seed=args.seed, **_gen_kwargs(args))
            res = check_batch(images, captions)
            _emit({"eval": "shapes", "model": str(args.model), "split": split, "n": args.n, "candidates": cands,
                   "rerank": cands > 1, "seed": args.seed, **_gen_kwargs(args),
                   **{k: round(v, 4) for k, v in res.items() if k != "n"},
                   "clip_score": None if scores is None else round(float(scores.clamp(min=0).mean()), 3),
                   "wall_s": round(time.time() - t0, 1)}, args.log)


def eval_emoji(args) -> None:
    from mmgen.data import build_dataset
    model = mmgen.load_pretrained(args.model)
    ds = build_dataset("emoji", split=args.splits[0])
    n = min(args.n, len(ds))
    captions = [ds[i]["caption"] for i in range(n)]
    for cands in args.candidates:
        t0 = time.time()
        images, scores = model.generate(captions, num_images=1, num_candidates=cands, rerank=cands > 1,
                                        seed=args.seed, truncate=True, **_gen_kwargs(args))
        _emit({"eval": "emoji", "model": str(args.model), "split": args.splits[0], "n": n, "candidates": cands,
               "rerank": cands > 1, "seed": args.seed, **_gen_kwargs(args),
               "clip_score": round(float(scores.clamp(min=0).mean()), 3), "wall_s": round(time.time() - t0, 1)},
              args.log)


def ship(args) -> None:
    """A DALL-E run directory -> a self-contained shipped checkpoint (weights in fp16; the VQ and
    CLIP checkpoints named relative to the new directory)."""
    model = mmgen.load_pretrained(args.run)
    if model.model_type != "dalle":
        raise SystemExit(f"{args.run} holds a {model.model_type!r} model; use `copy` for non-DALL-E checkpoints")
    model.config.vq_path, model.config.clip_path = args.vq, args.clip or ""
    out = Path(args.out)
    model.save_pretrained(out, dtype=torch.float16)
    loaded = mmgen.load_pretrained(out)
    loaded.vq  # the helper paths resolve from the new place
    if args.clip:
        assert loaded.clip is not None
    print(f"shipped {args.run} -> {out} ({sum(f.stat().st_size for f in out.iterdir()) / 2**20:.2f} MiB)")


def copy(args) -> None:
    model = mmgen.load_pretrained(args.run)
    out = Path(args.out)
    model.save_pretrained(out, dtype=torch.float16)
    mmgen.load_pretrained(out)
    print(f"copied {args.run} ({model.model_type}) -> {out} "
          f"({sum(f.stat().st_size for f in out.iterdir()) / 2**20:.2f} MiB)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("shapes", eval_shapes), ("emoji", eval_emoji)):
        e = sub.add_parser(name)
        e.add_argument("--model", required=True)
        e.add_argument("--n", type=int, default=200)
        e.add_argument("--candidates", type=int, nargs="+", default=[1, 8])
        e.add_argument("--splits", nargs="+", default=["heldout_test"] if name == "shapes" else ["test"])
        e.add_argument("--seed", type=int, default=0)
        e.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's")
        e.add_argument("--temperature", type=float, default=None)
        e.add_argument("--top-k", type=int, default=None, help="0 = off; default: the checkpoint's")
        e.add_argument("--top-p", type=float, default=None, help="0 = off; default: the checkpoint's")
        e.add_argument("--log", default=None)
        e.add_argument("--reference", action="store_true", help="shapes: also score the real images and their "
                                                                "VQ reconstructions (the ceiling)")
        e.set_defaults(func=fn)
    s = sub.add_parser("ship")
    s.add_argument("run")
    s.add_argument("out")
    s.add_argument("--vq", required=True, help="VQ checkpoint path relative to OUT, e.g. ../vq_shapes")
    s.add_argument("--clip", default="", help="CLIP checkpoint path relative to OUT, e.g. ../clip_shapes")
    s.set_defaults(func=ship)
    c = sub.add_parser("copy")
    c.add_argument("run")
    c.add_argument("out")
    c.set_defaults(func=copy)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
