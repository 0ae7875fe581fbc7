"""How much can reranking give? Draws K candidates per prompt from a shapes DALL-E, checks
every one with the strict shapes checker, and prints one JSON line per prompt group:

- "first": the share of prompts whose first candidate is all correct (1 sample);
- "any": the share with at least one all-correct candidate (a perfect reranker's best of K);
- one share per reranker (--clip): prompts whose candidate with the highest CLIP score is
  all correct (best of K by that CLIP). The candidates are the same for every reranker;
  --cache DIR keeps them, so other rerankers can be compared on them later in seconds.

    python scripts/rerank_oracle.py --model dalle_shapes --split val --n 100 --groups two heldout \\
        --clip clip_shapes_coca clip_shapes_reranker
"""
from __future__ import annotations

import json
import sys

import torch

from mmgen.commands._args import OneLineParser, finite_float, positive_int


@torch.no_grad()  # restored on return: main() is also called inside other programs (tests)
def main(argv=None) -> int:
    import mmgen
    from mmgen.data.shapes import check
    from mmgen.metrics.clip_score import clip_scores
    from mmgen.metrics.shapes_fidelity import GROUPS, PROMPT_SPLITS, prompt_groups
    from mmgen.models.clip import CLIPEnsemble
    from mmgen.pipelines import load_pipeline
    from mmgen.pipelines.base import to_float
    from mmgen.pipelines.paths import find_checkpoint
    ap = OneLineParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dalle_shapes", help="a shipped name or a DALL-E checkpoint directory")
    ap.add_argument("--clip", nargs="+", default=[], help="rerankers to compare (shipped names or directories); "
                                                          "default: the model's own")
    ap.add_argument("--split", choices=PROMPT_SPLITS, default="val", help="prompts from val (default) or test")
    ap.add_argument("--n", type=positive_int, default=100, help="prompts per group")
    ap.add_argument("--k", type=positive_int, default=8, help="candidates per prompt")
    ap.add_argument("--groups", nargs="+", choices=GROUPS, default=["two", "heldout"])
    ap.add_argument("--guidance", type=finite_float, default=None, help="default: the checkpoint's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", action="store_true", help="also pick by the mean of the rerankers' scores (all of "
                                                             "them as one CLIPEnsemble, as a DALL-E's extra_clip_paths)")
    ap.add_argument("--cache", default=None, help="keep the candidates in this folder and read them from there next "
                                                  "time (the same model, prompts, k, guidance and seed)")
    args = ap.parse_args(argv)
    try:
        pipe = load_pipeline(args.model)
        clips = {name: mmgen.load_pretrained(find_checkpoint(name)).eval() for name in args.clip}
    except (ValueError, TypeError, FileNotFoundError) as e:
        ap.error(str(e))
    if pipe.kind != "dalle":
        ap.error(f"{args.model!r} is a {pipe.kind} model; this script draws DALL-E candidates")
    if not clips and pipe.clip is not None:
        clips = {"own reranker": pipe.clip}
    if args.ensemble and len(clips) < 2:
        ap.error("--ensemble needs at least two --clip rerankers")
    for group, captions in prompt_groups(args.n, args.groups, split=args.split).items():
        images = to_float(candidates(pipe, captions, group, args)).flatten(0, 1)  # (n * k, C, H, W), prompt-major
        repeated = [c for c in captions for _ in range(args.k)]
        ok = torch.tensor([check(im, c)["correct"] for im, c in zip(images, repeated)]).view(-1, args.k)
        row = {"model": args.model, "split": args.split, "group": group, "n": len(captions), "k": args.k,
               "seed": args.seed, "guidance": args.guidance, "first": ok[:, 0].float().mean().item(), "any": ok.any(1).float().mean().item()}
        rerankers = dict(clips, **({"ensemble": CLIPEnsemble(list(clips.values()))} if args.ensemble else {}))
        for name, clip in rerankers.items():
            pick = clip_scores(clip, images, repeated).view(-1, args.k).argmax(1, keepdim=True)  # (n, 1)
            row[name] = ok.gather(1, pick).float().mean().item()
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return 0


def candidates(pipe, captions: list[str], group: str, args) -> torch.Tensor:
    """uint8 (n, k, 3, H, W): k samples per caption, drawn or read from args.cache."""
    import hashlib
    from pathlib import Path
    key = json.dumps([str(args.model), captions, args.k, args.guidance, args.seed])
    path = None
    if args.cache:
        path = Path(args.cache) / f"{group}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
    images = pipe(captions, num_images=args.k, candidates=1, rerank=False, seed=args.seed,
                  guidance=args.guidance).images
    if path is not None:
        from mmgen.checkpoint import atomic_save_file
        atomic_save_file(lambda p: torch.save(images, p), path)
    return images


if __name__ == "__main__":
    sys.exit(main())
