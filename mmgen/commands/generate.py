"""`mmgen generate PROMPT [PROMPT ...] -o grid.png`: images from text with a DALL-E or DDPM
checkpoint, through mmgen.pipelines.

`--model` is a shipped checkpoint name (dalle_shapes, dalle_emoji, ddpm_shapes; `dalle` and
`ddpm` are short for the shapes ones) or a checkpoint directory. The result is one image: a
row per prompt with the prompt as its caption, `--num-images` images per row, upscaled
`--scale` times for viewing (`--raw`: the images at the model's own 32 px, no captions)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..schedulers import SCHEDULERS
from ._args import device, finite_float, non_negative_float, non_negative_int, unit_float

DEFAULT_MODEL = "dalle_shapes"
MAX_NUM_IMAGES = 1024  # images per prompt in one grid row
MAX_GRID_SIDE = 16_384  # pixels: beyond this the upscale is lowered
ESTIMATE_ABOVE = 64  # samples: print a time estimate before starting


def check_output(path: str) -> Path:
    """The output file, refused before any work when an image cannot be written there."""
    from PIL import Image
    out = Path(path)
    exts = {e for e, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if out.is_dir() or path.endswith(("/", "\\")):
        raise ValueError(f"-o {path!r} is a directory; give an image file name, e.g. {str(out / 'grid.png')!r}")
    if out.suffix.lower() not in exts:
        raise ValueError(f"-o {path!r} has no image file extension; use .png (or .jpg, .webp, ...)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"-o {path!r}: {str(parent)!r} is a file, not a directory")
            break
    return out


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate images from text prompts (DALL-E, DDPM)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s); class names for class models")
    p.add_argument("-o", "--output", default="out.png", help="image file to write (default: out.png)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a shipped checkpoint (dalle_shapes, dalle_emoji, ddpm_shapes) or a checkpoint directory "
                        f"(default: {DEFAULT_MODEL}); `mmgen vocab MODEL` lists the words it reads")
    p.add_argument("-n", "--num-images", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    p.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale >= 0 (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="DDPM: sampling steps (default: the checkpoint's)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None, help="DDPM: the sampler")
    p.add_argument("--candidates", type=int, default=None,
                   help="draw N candidates per image and keep the best by CLIP score (default: 1 for DDPM; for "
                        "DALL-E with a reranker, enough for 8 per prompt and at least 2 per image)")
    p.add_argument("--no-rerank", action="store_true", help="keep the images in the order drawn")
    p.add_argument("--temperature", type=non_negative_float, default=None, help="DALL-E: sampling temperature")
    p.add_argument("--top-k", type=non_negative_int, default=None, help="DALL-E: top-k filter, 0 = off")
    p.add_argument("--top-p", type=unit_float, default=None, help="DALL-E: nucleus filter, 0 = off")
    p.add_argument("--truncate", action="store_true",
                   help="cut a prompt longer than the model's text context (with a warning) instead of refusing")
    p.add_argument("--scale", type=int, default=8, help="upscale each image N times for viewing (default 8)")
    p.add_argument("--raw", action="store_true", help="write the images at the model's own size, no captions")
    p.add_argument("--no-captions", action="store_true", help="no prompt captions above the rows")
    p.add_argument("--device", type=device, default=None, help="cpu | cuda | cuda:N | mps (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(f"mmgen generate: {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    import torch

    from mmgen.pipelines import load_pipeline, make_grid, raw_grid
    from mmgen.pipelines.base import draw_seed

    # everything that can be checked without the model, before loading it
    out_path = check_output(args.output)
    prompts = [p.strip() for p in args.prompts]
    if any(not p for p in prompts):
        raise ValueError("empty prompt: every PROMPT must contain some text: a caption such as 'a red circle', or a "
                         "class name such as 'cat' for a class-conditional model")
    if not 1 <= args.num_images <= MAX_NUM_IMAGES:
        raise ValueError(f"--num-images must be in [1, {MAX_NUM_IMAGES}] (images per prompt in one grid), got "
                         f"{args.num_images}; for more, run again with another --seed")
    for flag, value in (("--steps", args.steps), ("--candidates", args.candidates)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.guidance is not None and args.guidance < 0:
        raise ValueError(f"--guidance must be >= 0 (1 = no guidance), got {args.guidance}")
    if args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")

    pipe = load_pipeline(args.model)
    dalle_opts = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p") if getattr(args, k) is not None}
    if pipe.kind == "ddpm" and dalle_opts:
        raise ValueError(f"--{sorted(dalle_opts)[0].replace('_', '-')} is a DALL-E option; {args.model!r} is a "
                         f"diffusion model (its options: --steps, --scheduler, --guidance)")
    if pipe.kind == "dalle" and (args.steps is not None or args.scheduler is not None):
        raise ValueError(f"--steps / --scheduler are diffusion options; {args.model!r} is a DALL-E model")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    candidates = args.candidates
    if candidates is None:
        candidates = max(2, -(-8 // args.num_images)) if (pipe.kind == "dalle" and pipe.clip is not None
                                                          and not args.no_rerank) else 1
    for note in pipe.check_prompts(prompts, truncate=args.truncate):  # before the work starts
        _say(f"warning: {note}")
    seed = draw_seed() if args.seed is None else args.seed
    kw = dict(num_images=args.num_images, seed=seed, guidance=args.guidance, candidates=candidates,
              rerank=not args.no_rerank, steps=args.steps, temperature=args.temperature,
              top_k=args.top_k, top_p=args.top_p or None, truncate=args.truncate)
    if args.scheduler is not None:
        kw["scheduler"] = args.scheduler
    pipe.check_args(prompts, args.num_images, candidates, args.guidance, args.steps, args.temperature,
                    kw["top_k"], kw["top_p"], True)
    pipe.check_options(**({"steps": args.steps, "scheduler": args.scheduler} if pipe.kind == "ddpm" else {}))
    total = len(prompts) * args.num_images * candidates
    if total >= ESTIMATE_ABOVE:
        secs = pipe.estimate_seconds(len(prompts), args.num_images, candidates, guidance=args.guidance,
                                     steps=args.steps)
        _say(f"{total:,} samples ({len(prompts)} prompt(s) x {args.num_images} image(s) x {candidates} "
             f"candidate(s)): about {_duration(secs)} on {device}")
    _say(f"seed {seed} (pass --seed {seed} to get the same images again)")
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said above, one line each
        out = pipe(prompts, progress=not args.quiet, **kw)
    if args.raw:
        grid = raw_grid(out.images)
    else:
        P, N, _, H, W = out.images.shape
        scale = args.scale
        while scale > 1 and max(N * W + (N + 1) * 2, P * H + (P + 1) * 2) * scale > MAX_GRID_SIDE:
            scale -= 1
        if scale != args.scale:
            _say(f"warning: --scale {args.scale} would make a grid wider than {MAX_GRID_SIDE} px; using {scale}")
        grid = make_grid(out, scale=scale, captions=not args.no_captions)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_path)
    print(f"wrote {out_path} ({len(prompts)} prompt(s) x {args.num_images} image(s), model {args.model}, "
          f"seed {out.seed})")
    if out.scores is not None:
        for p, row in zip(prompts, out.scores):
            print(f"  {p!r}: CLIP scores " + " ".join(f"{float(s):.1f}" for s in row))
    return 0


def _duration(secs: float) -> str:
    if secs < 90:
        return f"{secs:.0f} s"
    if secs < 5400:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"
