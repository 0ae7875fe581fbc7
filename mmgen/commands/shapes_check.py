"""`mmgen shapes-check`: the shapes checker's accuracy on rendered ground truth and on
shuffled captions, its confusion matrix and what it reads on near-miss shapes
(mmgen.data.shapes.report_checker; docs/data.md)."""
from __future__ import annotations

from ._args import non_negative_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("shapes-check", help="accuracy of the rule-based shapes checker on rendered scenes",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=positive_int, default=2000, help="scenes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--split", default="test", choices=["test", "heldout_test", "val", "heldout_val"])
    p.add_argument("--noise", type=non_negative_float, default=0.0, help="Gaussian noise std in [-1, 1] units")
    p.add_argument("--blur", type=non_negative_float, default=0.0, help="Gaussian blur sigma in px")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.data.shapes import report_checker
    report_checker(args.n, args.seed, args.split, args.noise, args.blur)
    return 0
