"""`mmgen evaluate --model DIR --clip DIR`: evaluate an image generator offline (FD_ours /
KID_ours on our own encoder's features, CLIP score, the shapes checker's prompt fidelity), one
row per guidance scale; results.json and sample grids in --out (mmgen.metrics.evaluate)."""
from __future__ import annotations

from ._args import finite_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an image generator: FD_ours / KID_ours, CLIP score, prompt fidelity",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory of an image generator")
    p.add_argument("--clip", default=None, help="checkpoint directory of a trained mmgen CLIP (features + score)")
    p.add_argument("--encoder", default=None, help="checkpoint of the feature encoder for FD_ours/KID_ours "
                                                   "(default: the CLIP's image tower)")
    p.add_argument("--dataset", default="shapes", help="shapes or emoji (text prompts), or a labelled image set "
                                                       "(class labels)")
    p.add_argument("--data-set", dest="data_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for build_dataset, e.g. image_size=32 (emoji at the size the models use)")
    p.add_argument("--n", type=positive_int, default=200, help="samples per guidance scale (= real test images)")
    p.add_argument("--guidance", type=finite_float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--scheduler", default="dpm++")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=positive_int, nargs="+", default=[1],
                   help="samples drawn per prompt, the best kept by the model's own CLIP reranker; one row per "
                        "value and guidance scale (score with a --clip other than the reranker)")
    p.add_argument("--batch", type=positive_int, default=100, help="prompts per sampling call")
    p.add_argument("--out", default="runs/eval")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.metrics.evaluate import evaluate
    return evaluate(args)
