"""`mmgen zero-shot IMAGE... --labels "cat,dog,horse" --checkpoint DIR`: classify images
with a CLIP checkpoint from class names alone (prompt templates averaged, as in CLIP)."""
from __future__ import annotations

from ._args import device, positive_int


def register(sub) -> None:
    p = sub.add_parser("zero-shot", help="classify images with a CLIP checkpoint from class names")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    p.add_argument("--labels", help='comma-separated class names, e.g. "cat,dog,horse" (default with '
                   '--dataset: its classes)')
    p.add_argument("--dataset", help="instead of IMAGEs: report accuracy on a labelled dataset split")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=positive_int, default=None, help="items of the dataset to use")
    p.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE", help="dataset keyword argument")
    p.add_argument("--checkpoint", required=True, help="CLIP checkpoint directory")
    p.add_argument("--template", action="append", default=None,
                   help="prompt template with {} for the class name (repeatable; default 'a photo of a {}.', "
                        "or the dataset's own templates with --dataset)")
    p.add_argument("--templates", choices=["simple", "cifar"], default=None,
                   help="a template set: simple ('a photo of a {}.') or cifar (the CLIP paper's 18)")
    p.add_argument("--probe", action="store_true",
                   help="with --dataset: also fit a linear probe (logistic regression on the frozen image-tower "
                        "features of the train split, scored on --split) and print zero-shot / probe")
    p.add_argument("--probe-train", type=positive_int, default=None, metavar="N",
                   help="train items for the probe (default: the whole train split)")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes to print per image")
    p.add_argument("--device", type=device, default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from mmgen.metrics.clip_eval import SIMPLE_TEMPLATES, encode_images, zero_shot_classifier, zero_shot_logits

    from ._clip_common import image_spec, load_clip, load_images, split_list
    model = load_clip(args.checkpoint, args.device)
    from mmgen.metrics.clip_eval import CIFAR_TEMPLATES
    named = {"simple": list(SIMPLE_TEMPLATES), "cifar": list(CIFAR_TEMPLATES), None: None}[args.templates]
    templates = (args.template or []) + (named or [])
    if not templates and args.dataset:
        from mmgen.data.captions import TEMPLATES
        templates = list(TEMPLATES.get(args.dataset.replace("-", "_"), SIMPLE_TEMPLATES))
    templates = templates or list(SIMPLE_TEMPLATES)
    if args.dataset:
        from mmgen.metrics.clip_eval import dataset_zero_shot

        from ._clip_common import dataset_kwargs
        m = dataset_zero_shot(model, args.dataset, split=args.split, limit=args.limit, templates=templates,
                              data_kwargs=dataset_kwargs(args.dataset, args.split, args.data_set),
                              classnames=split_list(args.labels) if args.labels else None)
        if args.probe:
            from mmgen.metrics.clip_eval import dataset_linear_probe
            p = dataset_linear_probe(model, args.dataset, test_split=args.split, n_train=args.probe_train,
                                     n_test=args.limit,
                                     data_kwargs=dataset_kwargs(args.dataset, args.split, args.data_set))
            m.update({"probe_train_acc": p["train_acc"], "probe_top1": p["test_acc"], "probe_n_train": p["n_train"],
                      "zero_shot_over_probe": m["top1"] / max(p["test_acc"], 1e-12)})
        for k, v in m.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        return 0
    if args.probe:
        raise ValueError("--probe needs --dataset (a labelled dataset with a train split)")
    if not args.images or not args.labels:
        raise ValueError("give IMAGE files and --labels 'cat,dog,horse' (or --dataset NAME)")
    labels = split_list(args.labels)
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
