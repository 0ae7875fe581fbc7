"""Strict shapes fidelity of a DALL-E or DDPM checkpoint, per prompt group and attribute
(mmgen.metrics.shapes_fidelity): one JSON line per (group, candidates, guidance).

    python scripts/shapes_fidelity.py --model dalle_shapes --n 200 --candidates 1 8
    python scripts/shapes_fidelity.py --model dalle_shapes --clip clip_shapes_reranker --candidates 8
    python scripts/shapes_fidelity.py --model ddpm_shapes --n 200 --guidance 1 3 --steps 25
    python scripts/shapes_fidelity.py --model dalle_shapes --split val --n 100 --top-k 8   # choose settings on val
    python scripts/shapes_fidelity.py --model dalle_shapes --split val --layout-set top_k=8   # the outline stage only
    python scripts/shapes_fidelity.py --model dalle_shapes --split val --set one_colour_per_object=false
"""
from __future__ import annotations

import dataclasses
import json
import sys

from mmgen.commands._args import OneLineParser, finite_float, key_value, positive_int

LAYOUT_KEYS = ("guidance_scale", "temperature", "top_k", "top_p")  # --layout-set: sampling defaults only
MODEL_KEYS = (*LAYOUT_KEYS, "one_colour_per_object")  # --set: the DALL-E's own (a two-stage one's colour stage)


def main(argv=None) -> int:
    from mmgen.metrics.shapes_fidelity import GROUPS, PROMPT_SPLITS, fidelity, prompt_groups
    from mmgen.pipelines import load_pipeline
    from mmgen.pipelines.dalle import sampling_settings
    from mmgen.schedulers import SCHEDULERS
    from mmgen.train.metrics import append_jsonl
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a shipped name or a DALL-E / DDPM checkpoint directory")
    ap.add_argument("--n", type=positive_int, default=200, help="prompts per group")
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    ap.add_argument("--candidates", type=positive_int, nargs="+", default=[1])
    ap.add_argument("--guidance", type=finite_float, nargs="+", default=[None])
    ap.add_argument("--clip", nargs="+", default=None, help="rerank with this CLIP checkpoint instead of the model's "
                                                            "own (several: the mean of their scores)")
    ap.add_argument("--steps", type=positive_int, default=None, help="DDPM sampling steps (default: the checkpoint's)")
    ap.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="DDPM sampler (default: the checkpoint's)")
    ap.add_argument("--split", choices=PROMPT_SPLITS, default="test",
                    help="prompts from the test splits, or from val to choose sampling settings on")
    ap.add_argument("--temperature", type=finite_float, default=None, help="DALL-E sampling temperature "
                    "(default: the checkpoint's)")
    ap.add_argument("--top-k", type=positive_int, default=None, help="DALL-E: sample among the k likeliest tokens")
    ap.add_argument("--top-p", type=finite_float, default=None, help="DALL-E: nucleus sampling mass")
    ap.add_argument("--compose", type=finite_float, nargs="+", default=[None],
                    help="DALL-E trained with attribute dropout: weights of the attribute experts to score")
    ap.add_argument("--layout-set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="a two-stage DALL-E: the outline stage's own sampling default (" + ", ".join(LAYOUT_KEYS)
                         + "); --guidance, --top-k, ... set both stages")
    ap.add_argument("--set", dest="model_set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="a DALL-E's own sampling default (" + ", ".join(MODEL_KEYS) + "); of a two-stage one, "
                         "the colour stage's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    extra_parts = {}
    try:  # a wrong name, a missing directory, a checkpoint of another kind: one line, exit 2
        if args.clip is not None:
            import mmgen
            from mmgen.pipelines.paths import find_checkpoint
            extra_parts["clip"] = [mmgen.load_pretrained(find_checkpoint(name)) for name in args.clip]
        pipe = load_pipeline(args.model, **extra_parts)
    except (ValueError, TypeError, FileNotFoundError) as e:
        ap.error(str(e))
    if pipe.kind != "ddpm" and (args.steps is not None or args.scheduler is not None):
        ap.error(f"--steps / --scheduler set DDPM sampling; {args.model!r} is a {pipe.kind} model")
    token_sampling = [f for f in ("temperature", "top_k", "top_p") if getattr(args, f) is not None]
    if args.compose != [None] and pipe.kind != "dalle":
        ap.error(f"--compose sets DALL-E sampling; {args.model!r} is a {pipe.kind} model")
    if token_sampling and pipe.kind != "dalle":
        ap.error(f"--{token_sampling[0].replace('_', '-')} sets DALL-E token sampling; {args.model!r} is a "
                 f"{pipe.kind} model")
    layout_set, model_set = dict(args.layout_set), dict(args.model_set)
    if layout_set and (pipe.kind != "dalle" or pipe.model.layout is None):
        ap.error(f"--layout-set sets the outline stage of a two-stage DALL-E; {args.model!r} has none "
                 f"(config layout_path)")
    if model_set and pipe.kind != "dalle":
        ap.error(f"--set sets a DALL-E's sampling defaults; {args.model!r} is a {pipe.kind} model")
    for flag, values, keys, stage in (("--layout-set", layout_set, LAYOUT_KEYS, "layout"),
                                      ("--set", model_set, MODEL_KEYS, None)):
        if not values:
            continue
        unknown = sorted(set(values) - set(keys))
        if unknown:
            ap.error(f"{flag} takes {', '.join(keys)}, got {', '.join(unknown)}")
        model = pipe.model.layout if stage == "layout" else pipe.model
        try:
            model.config = dataclasses.replace(model.config, **values)
            sampling_settings(model.config)  # a bad value fails here, not after minutes of sampling
        except (ValueError, TypeError) as e:
            ap.error(f"{flag}: {e}")
    groups = prompt_groups(args.n, args.groups, split=args.split)
    extra = {k: v for k, v in dict(steps=args.steps, scheduler=args.scheduler, temperature=args.temperature,
                                   top_k=args.top_k, top_p=args.top_p).items() if v is not None}
    for guidance, compose in ((g, c) for c in args.compose for g in args.guidance):
        kw = dict(extra, **({} if guidance is None else {"guidance": guidance}),
                  **({} if compose is None else {"compose": compose}))
        for row in fidelity(pipe, groups, candidates=args.candidates, seed=args.seed, **kw):
            record = {"model": args.model, "clip": args.clip, "split": args.split, "guidance": guidance,
                      **({} if compose is None else {"compose": compose}),
                      **({"layout_set": layout_set} if layout_set else {}), **({"set": model_set} if model_set else {}),
                      **{k: v for k, v in extra.items() if k != "steps"}, **row}
            print(json.dumps(record), flush=True)
            if args.log:
                append_jsonl(args.log, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
