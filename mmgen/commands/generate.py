"""`mmgen generate PROMPT [PROMPT ...] -o out.png`: images from text with any image generator.

`--model` is a short name from MODELS (a checkpoint shipped in checkpoints/) or the path of
any mmgen checkpoint directory whose model has `generate_images(prompts, num_images=...,
seed=..., guidance_scale=..., **kw) -> (images in [-1, 1], scores or None)`. The result is
one PNG grid: a row per prompt, `--num-images` columns."""
from __future__ import annotations

import sys
from pathlib import Path

from ._args import device, finite_float, non_negative_float, non_negative_int, positive_int, unit_float

# short name -> checkpoint directory, relative to the repository's checkpoints/ folder.
# Other generators add their shipped checkpoint here.
MODELS: dict[str, str] = {
    "dalle": "dalle_shapes",
    "dalle_shapes": "dalle_shapes",
    "dalle_emoji": "dalle_emoji",
    "ddpm": "ddpm_shapes",
}
DEFAULT_MODEL = "dalle"
SCHEDULER_CHOICES = ("ddpm", "ddim", "dpm++", "euler")


def checkpoint_roots() -> list[Path]:
    """Where shipped checkpoints are looked for: ./checkpoints, then mmgen's own (see
    mmgen.checkpoint.find_checkpoint: a wheel's package data or the repository's folder)."""
    from mmgen.checkpoint import shipped_roots
    return [Path.cwd() / "checkpoints", *shipped_roots()]


def resolve_model(name: str) -> Path:
    """A MODELS name or a checkpoint path -> an existing checkpoint directory."""
    if name in MODELS:
        for root in checkpoint_roots():
            path = root / MODELS[name]
            if (path / "config.json").is_file():
                return path
        raise FileNotFoundError(
            f"model {name!r} is the shipped checkpoint checkpoints/{MODELS[name]}, which was not found under "
            f"{', '.join(str(r) for r in checkpoint_roots())}; run from the repository root or pass a checkpoint path")
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{name!r} is not an mmgen checkpoint directory (no config.json in it)")
        return path
    if "/" in name or name.startswith("."):
        raise FileNotFoundError(f"checkpoint directory {name!r} does not exist")
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(MODELS)} or a checkpoint directory")


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate images from text prompts (DDPM, DALL-E, ...)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s); class names for class models")
    p.add_argument("-o", "--output", default="out.png", help="PNG grid to write (default: out.png)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"one of {sorted(MODELS)} (shipped checkpoints) or a checkpoint directory "
                        f"(default: {DEFAULT_MODEL})")
    p.add_argument("-n", "--num-images", type=positive_int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=finite_float, default=None, help="classifier-free guidance scale (model default)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (model default)")
    p.add_argument("--scheduler", choices=SCHEDULER_CHOICES, default=None, help="diffusion sampler (DDPM models)")
    p.add_argument("--candidates", type=positive_int, default=None,
                   help="autoregressive models (DALL-E): sample N per prompt and keep the best --num-images by "
                        "CLIP score (default: 8 when the model has a CLIP reranker)")
    p.add_argument("--no-rerank", action="store_true", help="DALL-E: keep the first --num-images candidates")
    p.add_argument("--temperature", type=non_negative_float, default=None, help="DALL-E: sampling temperature (model default)")
    p.add_argument("--top-k", type=non_negative_int, default=None, help="DALL-E: top-k filter, 0 = off (model default)")
    p.add_argument("--top-p", type=unit_float, default=None, help="DALL-E: nucleus filter, 0 = off (model default)")
    p.add_argument("--truncate", action="store_true",
                   help="DALL-E: cut a prompt longer than the model's text context (with a warning) instead of refusing")
    p.add_argument("--device", type=device, default=None, help="cpu | cuda | cuda:N | mps (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from torchvision.utils import save_image

    import mmgen

    prompts = [p.strip() for p in args.prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("empty prompt: every PROMPT must contain some text, e.g. 'a red circle'")
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    path = resolve_model(args.model)
    model = mmgen.load_pretrained(path)
    if not callable(getattr(model, "generate_images", None)):
        raise TypeError(f"{str(path)!r} holds a {model.model_type!r} model, which is not an image generator "
                        f"(it has no generate_images); pick a DDPM or DALL-E checkpoint")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    kw = {}
    if args.guidance is not None:
        kw["guidance_scale"] = args.guidance
    if args.steps is not None:
        kw["num_steps"] = args.steps
    if args.scheduler is not None:
        kw["scheduler"] = args.scheduler
    if args.quiet:
        kw["progress"] = False
    if args.candidates is not None:
        if args.candidates < args.num_images:
            raise ValueError(f"--candidates ({args.candidates}) must be >= --num-images ({args.num_images})")
        kw["num_candidates"] = args.candidates
    if args.no_rerank:
        kw["rerank"] = False
    for name in ("temperature", "top_k", "top_p"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = None if (value == 0 and name != "temperature") else value
    if args.truncate:
        kw["truncate"] = True
    import warnings
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, scores = model.generate_images(prompts, num_images=args.num_images, seed=args.seed, **kw)
    for w in caught:  # prompt warnings (unseen words, truncation) as one clean line each
        if issubclass(w.category, UserWarning):
            print(f"mmgen generate: warning: {w.message}", file=sys.stderr)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, out, nrow=args.num_images, padding=2)
    print(f"wrote {out} ({len(prompts)} prompt(s) x {args.num_images} image(s), model {path})")
    if scores is not None:
        for i, p in enumerate(prompts):
            row = scores[i * args.num_images:(i + 1) * args.num_images]
            print(f"  {p!r}: scores " + " ".join(f"{float(s):.3f}" for s in row))
    return 0
