"""`mmgen vision-curve`: test accuracy against quiet-machine training minutes for the image
classifiers on animal-mnist (ResNet-18, ViT, Swin): one table and one PNG from the logged
evaluations of the runs under --root (mmgen.metrics.vision_curve)."""
from __future__ import annotations


def register(sub) -> None:
    from mmgen.metrics.vision_curve import DEFAULT_PNG, DEFAULT_ROOT
    p = sub.add_parser("vision-curve", help="accuracy vs training minutes of the animal-mnist classifiers",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=DEFAULT_ROOT, help="folder of the run directories (one per recipe)")
    p.add_argument("--png", default=DEFAULT_PNG)
    p.add_argument("--launch", action="store_true", help="train the missing runs first (one at a time)")
    p.add_argument("--recipes", nargs="*", default=None, help="recipes to launch (default: all of the curve)")
    p.add_argument("--include-modified", action="store_true",
                   help="also show runs whose settings differ from their recipe (--set overrides, old step counts)")
    p.add_argument("--exact", action="store_true", help="recompute each final accuracy over the whole test split")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.metrics.vision_curve import report
    return report(args.root, args.png, launch_runs=args.launch, recipes=args.recipes,
                  include_modified=args.include_modified, exact=args.exact)
