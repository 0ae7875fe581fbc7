"""Measure and ship the DALL-E checkpoints (the figures in docs/dalle.md and the model cards).

    # held-out shapes captions: checker all-attributes-correct rate, 1 candidate vs 8 reranked by CLIP
    python scripts/dalle_eval.py shapes --model checkpoints/dalle_shapes --n 200 --candidates 1 8
    # a training run -> a shipped checkpoint (fp16 weights, helper paths relative to checkpoints/)
    python scripts/dalle_eval.py ship runs/dalle_shapes checkpoints/dalle_shapes --vq ../vq_shapes --clip ../clip_shapes
    # any other mmgen checkpoint (VQ, CLIP) -> fp16 copy
    python scripts/dalle_eval.py copy RUN_DIR checkpoints/vq_shapes

Every figure is printed as one JSON line (and appended to --log when given).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mmgen  # noqa: E402
from mmgen.commands._args import (OneLineParser, finite_float, key_value, non_negative_float,  # noqa: E402
                                  non_negative_int, positive_int, unit_float)


def _emit(record: dict, log: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def _gen_kwargs(args) -> dict:
    """Sampling options given on the command line (guidance / temperature: the checkpoint's by
    default; top-k / top-p: off by default and with 0)."""
    kw = dict(guidance=args.guidance, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    return {k: (None if v == 0 and k in ("top_k", "top_p") else v) for k, v in kw.items() if v is not None}


def _generate(pipe, captions, cands: int, args):
    """One image per caption, the best of `cands` by CLIP: (float images in [-1, 1], scores or None)."""
    from mmgen.pipelines.base import to_float
    out = pipe(captions, num_images=1, candidates=cands, rerank=cands > 1, seed=args.seed, progress=not args.quiet,
               **_gen_kwargs(args))
    return to_float(out.images[:, 0]), None if out.scores is None else out.scores[:, 0]


def _clip_score(pipe, images, captions):
    from mmgen.metrics.clip_score import clip_scores
    return None if pipe.clip is None else round(float(clip_scores(pipe.clip, images, captions).clamp(min=0).mean()), 3)


def eval_shapes(args) -> None:
    from mmgen.data import build_dataset
    from mmgen.data.shapes import check_batch
    from mmgen.pipelines import DALLEPipeline
    pipe = DALLEPipeline.from_pretrained(args.model)
    for split in args.splits:
        kw = {"holdout": "default"}
        ds = build_dataset("shapes", split=split, **kw)
        captions = [ds.scene(i)[2] for i in range(args.n)]
        if args.reference:  # the ceiling: the checker on the real images and on their VQ reconstructions
            real = torch.stack([ds[i]["image"] for i in range(args.n)])
            recon = pipe.vq.reconstruct(real.to(pipe.vq.device)).cpu()
            for name, ims in (("real", real), ("vq_recon", recon)):
                res = check_batch(ims, captions)
                _emit({"eval": "shapes", "reference": name, "split": split, "n": args.n,
                       **{k: round(v, 4) for k, v in res.items() if k != "n"},
                       "clip_score": _clip_score(pipe, ims, captions)}, args.log)
        for cands in args.candidates:
            t0 = time.time()
            images, scores = _generate(pipe, captions, cands, args)
            res = check_batch(images, captions)
            _emit({"eval": "shapes", "model": str(args.model), "split": split, "n": args.n, "candidates": cands,
                   "rerank": cands > 1, "seed": args.seed, **_gen_kwargs(args),
                   **{k: round(v, 4) for k, v in res.items() if k != "n"},
                   "clip_score": None if scores is None else round(float(scores.clamp(min=0).mean()), 3),
                   "wall_s": round(time.time() - t0, 1)}, args.log)


def ship(args) -> None:
    """A DALL-E run directory -> a shipped checkpoint (weights in fp16; the VQ and CLIP
    checkpoints named relative to the new directory)."""
    from mmgen.pipelines import DALLEPipeline
    model = mmgen.load_pretrained(args.run)
    if model.model_type != "dalle":
        raise SystemExit(f"{args.run} holds a {model.model_type!r} model; use `copy` for non-DALL-E checkpoints")
    out = Path(args.out)
    # --vq / --clip are given relative to OUT; save_pretrained stores them relative to OUT again
    model.config.vq_path = str((out / args.vq).resolve())
    clips = [str((out / c).resolve()) for c in args.clip]  # several: they rerank together (CLIPEnsemble)
    model.config.clip_path, model.config.extra_clip_paths = (clips[0], tuple(clips[1:])) if clips else ("", ())
    model.config.layout_path = str((out / args.layout).resolve()) if args.layout else ""
    for field, value in args.set:  # sampling defaults measured on val, e.g. top_k=4
        if not hasattr(model.config, field):
            raise SystemExit(f"--set {field}: a DALL-E config has no field {field!r}")
        setattr(model.config, field, value)
    model.save_pretrained(out, dtype=torch.float16)
    pipe = DALLEPipeline.from_pretrained(out)  # the companion paths resolve from the new place
    if args.clip:
        assert pipe.clip is not None
    print(f"shipped {args.run} -> {out} ({sum(f.stat().st_size for f in out.iterdir()) / 2**20:.2f} MiB)")


def copy(args) -> None:
    from mmgen.checkpoint import read_config
    from mmgen.registry import get_family
    # strict=False: a run saved before a buffer was added to its family (e.g. VQ's preview) still loads
    model = get_family(read_config(args.run)["model_type"]).from_pretrained(args.run, strict=False)
    out = Path(args.out)
    model.save_pretrained(out, dtype=torch.float16)
    mmgen.load_pretrained(out)
    print(f"copied {args.run} ({model.model_type}) -> {out} "
          f"({sum(f.stat().st_size for f in out.iterdir()) / 2**20:.2f} MiB)")


def card(args) -> None:
    """Write OUT/README.md (the model card) from the run directory and the eval log."""
    run, out = Path(args.run), Path(args.out)
    rc = json.loads((run / "run_config.json").read_text())
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    val = [r for r in recs if "val/loss" in r][-1]
    train_last = [r for r in recs if "loss_image" in r][-1]
    evals = [json.loads(l) for l in Path(args.log).read_text().splitlines() if l.strip()]
    m = mmgen.load_pretrained(out)
    c = m.config
    tc = rc["train"]
    cmd = "python -m train " + " ".join(a if " " not in a else repr(a) for a in rc["argv"])

    def row(e):
        what = ("real images" if e.get("reference") == "real" else "VQ reconstructions of the real images"
                if e.get("reference") == "vq_recon" else
                f"DALL-E, {e['candidates']} candidate{'s' if e['candidates'] > 1 else ''}"
                + (", best by CLIP" if e.get("rerank") else ""))
        rel = "-" if e["relation"] != e["relation"] else f"{100 * e['relation']:.1f}"
        return (f"| {e['split']} | {what} | **{100 * e['correct']:.1f}%** | {100 * e['colour']:.1f} | "
                f"{100 * e['shape']:.1f} | {rel} | {100 * e['count']:.1f} | {e['clip_score']} |")

    table = "\n".join(row(e) for e in evals if e.get("eval") == "shapes")
    text = f"""# dalle_shapes: text -> 32 px shapes images

A small DALL-E (`mmgen/models/dalle.py`, preset `{rc['preset']}`): one causal transformer
({c.block.depth} layers, width {c.block.embed_dim}, {c.block.num_heads} heads, {m.num_params() / 1e6:.2f}M parameters) over
[{c.context_length} text positions; {c.image_grid[0]}x{c.image_grid[1]} VQ tokens]. Text: clip_bpe pruned to the shapes grammar
({c.text_vocab} tokens, stored in config.json). Weights in fp16 (cast to fp32 on load).

* **Helpers, by relative path** (not embedded): `vq_path = "{c.vq_path}"` (the tokenizer it was
  trained with; 512 codes), `clip_path = "{c.clip_path}"` (the reranker). Resolved relative to this
  directory, so ship the three directories together.
* **Data**: `build_dataset("shapes", "train", holdout="default")`: the red circle, green square,
  blue triangle, yellow diamond, magenta cross and cyan circle never occur in training.
* **Training**: {tc['steps']} steps x batch {tc['batch_size']} ({tc['steps'] * tc['batch_size']:,} captioned images), AdamW lr {tc['lr']}
  (warm-up {tc['warmup']}, cosine to {tc['min_lr']}), loss = (1 x text CE + 7 x image CE) / 8, 15% of
  captions dropped to the null caption (for classifier-free guidance).
  Final train loss {train_last['loss']:.3f} (image {train_last['loss_image']:.3f}, text {train_last['loss_text']:.3f} nats/token);
  val (shapes val split) loss {val['val/loss']:.3f} (image {val['val/loss_image']:.3f}, text {val['val/loss_text']:.3f}).
* **Reproduce** (from the repository root, with checkpoints/vq_shapes in place):

```bash
{cmd}
python scripts/dalle_eval.py ship {rc['argv'][rc['argv'].index('--out') + 1]} checkpoints/dalle_shapes --vq ../vq_shapes --clip ../clip_shapes
```

* **Sampling defaults** (config): guidance scale {c.guidance_scale}, temperature {c.temperature}, top-k {c.top_k},
  top-p {c.top_p}; `mmgen generate` draws 8 samples per prompt (at least 2 per image) and keeps the best by CLIP score.

## Results

Shapes checker (`mmgen.data.shapes.check`) on 200 captions per split, one image per caption,
seed 0, guidance {c.guidance_scale}. `heldout_test`: every caption names at least one held-out
colour-shape pair (never seen in training); `test`: in-distribution captions of scenes not
in training. "correct" = count, colours, shapes and relation all right. CLIP score = mean
100 x max(cos, 0) under checkpoints/clip_shapes.

| split | images | correct | colour | shape | relation | count | CLIP score |
|---|---|---|---|---|---|---|---|
{table}

Command: `python scripts/dalle_eval.py shapes --model checkpoints/dalle_shapes --n 200 --candidates 1 8 --splits heldout_test test --reference`

The shape attribute is the weak one: the VQ tokenizer itself only keeps the shape readable in
about 2/3 of the real images (the "VQ reconstructions" rows), and the model gets colours and
layout right far more often than exact shapes. Reranking by CLIP mostly fixes colours.
"""
    (out / "README.md").write_text(text)
    print(f"wrote {out / 'README.md'}")


def main(argv=None) -> int:
    p = OneLineParser(prog="scripts/dalle_eval.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("shapes")  # emoji: `mmgen evaluate --dataset emoji` (docs/dalle.md)
    e.add_argument("--model", required=True)
    e.add_argument("--n", type=positive_int, default=200)
    e.add_argument("--candidates", type=positive_int, nargs="+", default=[1, 8])
    e.add_argument("--splits", nargs="+", default=["heldout_test"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--guidance", type=finite_float, default=None, help="default: the checkpoint's")
    e.add_argument("--temperature", type=non_negative_float, default=None)
    e.add_argument("--top-k", type=non_negative_int, default=None, help="0 = off; default: the checkpoint's")
    e.add_argument("--top-p", type=unit_float, default=None, help="0 = off; default: the checkpoint's")
    e.add_argument("--log", default=None)
    e.add_argument("--quiet", action="store_true", help="no progress bar (default: one with the time left)")
    e.add_argument("--reference", action="store_true", help="shapes: also score the real images and their "
                                                            "VQ reconstructions (the ceiling)")
    e.set_defaults(func=eval_shapes)
    s = sub.add_parser("ship")
    s.add_argument("run")
    s.add_argument("out")
    s.add_argument("--vq", required=True, help="VQ checkpoint path relative to OUT, e.g. ../vq_shapes")
    s.add_argument("--clip", nargs="*", default=[], help="CLIP checkpoint path(s) relative to OUT, e.g. "
                                                         "../clip_shapes (several: they rerank together)")
    s.add_argument("--layout", default="", help="the layout DALL-E's checkpoint path relative to OUT, e.g. "
                                                "../dalle_shapes_layout (two-stage sampling; config layout_path)")
    s.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a config field of the shipped model, e.g. top_k=4 (repeatable)")
    s.set_defaults(func=ship)
    k = sub.add_parser("card")
    k.add_argument("run")
    k.add_argument("out")
    k.add_argument("--log", required=True, help="the eval JSON lines of this checkpoint")
    k.set_defaults(func=card)
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
