"""`mmgen retrieve`: image<->text retrieval with a CLIP checkpoint.

  mmgen retrieve --checkpoint DIR --text "a red circle" IMAGE...    rank images for a caption
  mmgen retrieve --checkpoint DIR --image IMG --texts "a,b,c"       rank captions for an image
  mmgen retrieve --checkpoint DIR --dataset shapes --split test     recall@1/5/10 both ways
"""
from __future__ import annotations

from ._args import device, positive_int


def register(sub) -> None:
    p = sub.add_parser("retrieve", help="image-text retrieval (ranking or recall@K) with a CLIP checkpoint")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="images to rank for --text")
    p.add_argument("--checkpoint", required=True, help="CLIP checkpoint directory")
    p.add_argument("--text", help="caption to rank IMAGEs for")
    p.add_argument("--image", help="image to rank --texts / --texts-file for")
    p.add_argument("--texts", help="comma-separated captions for --image")
    p.add_argument("--texts-file", help="file with one caption per line for --image")
    p.add_argument("--dataset", help="evaluate recall@K on a captioned dataset (mmgen.data name)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=positive_int, default=1000, help="items of the dataset to use")
    p.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset keyword argument (repeatable); shapes' heldout_* splits default to holdout=default")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--device", type=device, default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmgen.metrics.clip_eval import encode_images, encode_texts

    from ._clip_common import image_spec, load_clip, load_images, split_list
    modes = [m for m, on in (("--text", args.text), ("--image", args.image), ("--dataset", args.dataset)) if on]
    if len(modes) != 1:
        raise ValueError(f"give exactly one of --text (with IMAGEs), --image (with --texts) or --dataset; got "
                         f"{modes or 'none'}")
    model = load_clip(args.checkpoint, args.device)
    spec = image_spec(model)
    if args.dataset:
        from mmgen.metrics.clip_eval import dataset_retrieval
        from ._clip_common import dataset_kwargs
        m = dataset_retrieval(model, args.dataset, split=args.split, limit=args.limit,
                              data_kwargs=dataset_kwargs(args.dataset, args.split, args.data_set))
        if args.dataset == "shapes":  # what recall does not show: relation and colour binding
            from mmgen.metrics.clip_eval import shapes_binding
            b = shapes_binding(model, split=args.split, data_kwargs=dataset_kwargs(args.dataset, args.split,
                                                                                   args.data_set))
            m.update({f"prefers_own_caption_over_{k}": b[k] for k in ("relation_reversed", "colours_swapped")},
                     text_cosine_caption_vs_relation_reversed=b["text_cosine_relation"])
        for k, v in m.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
        return 0
    if args.text:
        if not args.images:
            raise ValueError("--text ranks images: give IMAGE files")
        img = encode_images(model, load_images(args.images, *spec))
        sims = (encode_texts(model, [args.text]) @ img.T)[0]
        names = args.images
    else:
        if bool(args.texts) == bool(args.texts_file):
            raise ValueError("--image ranks captions: give --texts 'a,b,c' or --texts-file FILE")
        if args.texts:
            names = split_list(args.texts)
        else:
            from pathlib import Path
            names = [ln.strip() for ln in Path(args.texts_file).read_text().splitlines() if ln.strip()]
        img = encode_images(model, load_images([args.image], *spec))
        sims = (img @ encode_texts(model, names).T)[0]
    top = sims.topk(min(args.top_k, len(names)))
    for rank, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        print(f"{rank}. {v:+.4f}  {names[i]}")
    return 0
