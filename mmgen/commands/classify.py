"""`mmgen classify CHECKPOINT`: exact top-1 accuracy and mean cross-entropy of a trained image
classifier (ViT, Swin, ResNet) over every image of a labelled split; one JSON line."""
from __future__ import annotations

from ._args import positive_int


def register(sub) -> None:
    p = sub.add_parser("classify", help="exact test accuracy of a trained image classifier",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run directory or checkpoint of an image classifier")
    p.add_argument("--data", default="animal_mnist", help="a labelled image dataset (default animal_mnist)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from mmgen import load_pretrained
    from mmgen.data import build_dataset
    from mmgen.metrics.classifier import evaluate_classifier

    model = load_pretrained(args.checkpoint)
    res = evaluate_classifier(model, build_dataset(args.data, args.split), args.batch_size)
    print(json.dumps({"checkpoint": args.checkpoint, "data": args.data, "split": args.split, **res}))
    return 0
