"""Evaluate an image generator offline: text-conditional on the test captions of a captioned
set (shapes, or emoji with --data-set image_size=32), or class-conditional on a labelled set
(--dataset animal_mnist, prompts = the test labels).

    mmgen evaluate --model checkpoints/ddpm_shapes --clip PATH_TO_CLIP \
        --n 200 --guidance 1 3 --steps 20 --scheduler dpm++ --seed 0 --out runs/eval_ddpm

For each guidance scale (and each --candidates value: the best of that many samples per
prompt, kept by the model's own CLIP reranker): N samples for the first N captions of the
shapes `test` split (fixed, seeded; captions the generator refuses are skipped), then
  - FD_ours / KID_ours against the N real test images, on the pooled image features of our
    trained CLIP's image tower (NOT Inception: never compare with FID figures);
  - CLIP score (100 x cosine) with the same CLIP, and for text prompts caption retrieval: the
    share of samples whose own caption is the CLIP's first (top 5) choice among the N;
  - prompt fidelity (shapes only): the shapes checker's `correct` rate, plus its colour /
    shape / relation / count rates;
  - class agreement (a labelled set whose --encoder is a classifier of its classes): the share
    of samples it assigns to the asked class, and of the real test images (the ceiling).
Writes results.json and one sample grid per guidance scale to --out. The command line is
mmgen/commands/evaluate.py; `evaluate(args)` takes its parsed arguments."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch


def evaluate(args) -> int:
    import mmgen
    from mmgen.data import build_dataset
    from mmgen.data.shapes import check_batch
    from torchvision.utils import save_image

    from . import caption_retrieval, clip_score, fd_kid
    from .classifier import class_agreement

    from mmgen.pipelines import load_pipeline
    from mmgen.pipelines.base import to_float
    from mmgen.text.captions import dataset_captions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.model)
    candidates = getattr(args, "candidates", [1])
    if max(candidates) > 1 and pipe.clip is None:
        raise ValueError(f"--candidates {max(candidates)} keeps the best samples by the model's CLIP reranker, and "
                         f"{args.model} names none (its config's clip_path): use --candidates 1")
    clip = mmgen.load_pretrained(args.clip).eval() if args.clip else None
    encoder = mmgen.load_pretrained(args.encoder).eval() if args.encoder else clip
    data_kwargs = {}
    for kv in args.data_sets:
        if "=" not in kv:
            raise ValueError(f"--data-set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        data_kwargs[k] = int(v) if v.lstrip("-").isdigit() else v
    shapes = args.dataset == "shapes"
    text = args.dataset in ("shapes", "emoji")
    test = build_dataset(args.dataset, split="test", **data_kwargs)
    if args.n > len(test):
        raise ValueError(f"--n {args.n} is more than the {len(test)} items of the {args.dataset} test split")
    # a generator that refuses a caption (no word it can read: a DALL-E on unseen emoji names)
    # is scored on the others
    usable = list(range(len(test)))
    if text:
        all_captions = dataset_captions(test)  # without drawing every image
        usable = [i for i in usable if _readable(pipe, all_captions[i])]
        if len(usable) < args.n:
            raise ValueError(f"--n {args.n} is more than the {len(usable)} test captions {args.model} can "
                             f"read")
    skipped = len(test) - len(usable)
    # shapes: the first n (its order is random); other sets are stored in order (class by
    # class, emoji by category), so take n evenly spaced items
    index = (usable[:args.n] if shapes else
             [usable[j] for j in torch.linspace(0, len(usable) - 1, args.n).long().tolist()])
    items = [test[i] for i in index]
    captions = [it["caption"] if text else int(it["label"]) for it in items]
    real = torch.stack([it["image"] for it in items])
    # a labelled set with a classifier of its classes as the encoder: also the share of samples
    # it assigns to the asked class (recognisability), and its rate on the real test images
    classifier = encoder if (not text and encoder is not None and hasattr(encoder, "forward_head")
                             and getattr(getattr(encoder, "config", None), "num_classes", 0) == len(test.classes)) else None
    # CLIP score of class-conditional samples: against the set's first caption template
    def prompt_of(label: int) -> str:
        return test.templates[0].format(test.classes[label].replace("_", " "))

    clip_texts = captions if text else [prompt_of(c) for c in captions]
    results = {"model": str(args.model), "clip": args.clip, "encoder": args.encoder or args.clip,
               "dataset": args.dataset, "n": args.n, "steps": args.steps,
               "scheduler": args.scheduler, "seed": args.seed, "data_kwargs": data_kwargs,
               "captions": "test split: shapes the first n, other sets n evenly spaced",
               "skipped_unreadable": skipped, "runs": []}
    if encoder is not None:  # the floor: real test images against as many real val/train images
        try:
            val = build_dataset(args.dataset, split="val", **data_kwargs)
        except ValueError:
            val = build_dataset(args.dataset, split="train", **data_kwargs)
        val_index = range(args.n) if shapes else torch.linspace(0, len(val) - 1, min(args.n, len(val))).long().tolist()
        val_items = [val[i] for i in val_index]
        ref = torch.stack([it["image"] for it in val_items])
        floor = fd_kid(encoder, real, ref)
        if clip is not None:
            floor["clip_score"] = clip_score(clip, ref, [it["caption"] for it in val_items] if text else
                                             [prompt_of(int(it["label"])) for it in val_items])
        if classifier is not None:
            floor["class_agreement"] = class_agreement(classifier, real, captions)
        if shapes:
            floor.update({f"fidelity_{k}": v for k, v in check_batch(ref, [it["caption"] for it in val_items]).items()
                          if k != "n"})
        results["real_val_vs_real_test"] = floor
        print("real val vs real test:", json.dumps(floor))
    from tqdm import tqdm

    # one bar over every sample of every guidance scale: its rate and ETA cover the whole job
    bar = tqdm(total=args.n * len(args.guidance) * len(candidates), unit="img", desc="sampling",
               disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    real_scores = {}  # the same for every row: computed once
    if clip is not None:
        real_scores["clip_score_real"] = clip_score(clip, real, clip_texts)
        if text:  # is each image specific to its prompt? (real test images: the ceiling)
            real_scores.update({f"caption_{k}_real": v for k, v in caption_retrieval(clip, real, clip_texts).items()})
    diffusion = {"steps": args.steps, "scheduler": args.scheduler} if pipe.kind == "ddpm" else {}

    def sample_and_score(g: float, cands: int) -> dict:
        """One row: args.n samples at guidance g, each the best of `cands` by the pipeline's
        reranker, scored against the real test images."""
        t0 = time.perf_counter()
        chunks = []
        bar.set_description(f"sampling, guidance {g:g}" + (f", best of {cands}" if cands > 1 else ""))
        for i in range(0, args.n, args.batch):
            res = pipe(captions[i:i + args.batch], num_images=1, candidates=cands, rerank=cands > 1,
                       seed=args.seed + i, guidance=g, truncate=True, progress=False, **diffusion)
            chunks.append(to_float(res.images[:, 0]))  # (b, 3, H, W) in [-1, 1]
            bar.update(len(chunks[-1]))
        fake = torch.cat(chunks)
        rec = {"guidance": g, "sample_s": round(time.perf_counter() - t0, 1)}
        if cands > 1:
            rec["candidates"] = cands
        if shapes:
            rec.update({f"fidelity_{k}": v for k, v in check_batch(fake, captions).items() if k != "n"})
        if encoder is not None:
            rec.update(fd_kid(encoder, real, fake))
        if classifier is not None:
            per_class = class_agreement(classifier, fake, captions, class_names=test.classes)
            rec["class_agreement"] = per_class.pop("all")
            rec["class_agreement_per_class"] = per_class
        if clip is not None:
            rec["clip_score"] = clip_score(clip, fake, clip_texts)
            if text:
                rec.update({f"caption_{k}": v for k, v in caption_retrieval(clip, fake, clip_texts).items()})
            rec.update(real_scores)
        save_image((fake[:32] + 1) / 2, out / f"samples_g{g:g}{'_best%d' % cands if cands > 1 else ''}.png",
                   nrow=8, padding=1)
        bar.write(json.dumps(rec), file=sys.stdout)
        return rec

    results["runs"] = [sample_and_score(g, cands) for cands in candidates for g in args.guidance]
    bar.close()
    save_image((real[:32] + 1) / 2, out / "real.png", nrow=8, padding=1)
    (out / "captions.txt").write_text("\n".join(map(str, captions[:32])) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


def _readable(pipe, caption: str) -> bool:
    """Whether the pipeline takes `caption` (it refuses one with no word it can read)."""
    try:
        pipe.check_prompts([caption], truncate=True)  # warnings about single unknown words are fine
    except ValueError:
        return False
    return True
