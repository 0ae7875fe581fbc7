"""`mmgen zero-shot IMAGE... --labels "cat,dog,horse" --checkpoint DIR`: classify images
with a CLIP checkpoint from class names alone (prompt templates averaged, as in CLIP)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("zero-shot", help="classify images with a CLIP checkpoint from class names")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,horse"')
    p.add_argument("--checkpoint", required=True, help="CLIP checkpoint directory")
    p.add_argument("--template", action="append", default=None,
                   help="prompt template with {} for the class name (repeatable; default 'a photo of a {}.')")
    p.add_argument("--top-k", type=int, default=3, help="classes to print per image")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from mmgen.metrics.clip_eval import SIMPLE_TEMPLATES, encode_images, zero_shot_classifier, zero_shot_logits

    from ._clip_common import image_spec, load_clip, load_images, split_list
    model = load_clip(args.checkpoint, args.device)
    labels = split_list(args.labels)
    templates = args.template or list(SIMPLE_TEMPLATES)
    images = load_images(args.images, *image_spec(model))
    clf = zero_shot_classifier(model, labels, templates)
    with torch.no_grad():
        probs = (model.logit_scale.exp().cpu() * zero_shot_logits(encode_images(model, images), clf.cpu())).softmax(-1)
    k = min(args.top_k, len(labels))
    for path, p in zip(args.images, probs):
        top = p.topk(k)
        ranked = ", ".join(f"{labels[i]} {v:.3f}" for v, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")
    return 0
