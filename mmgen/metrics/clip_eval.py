"""Evaluating a CLIP model: zero-shot classification (through open_clip's
`build_zero_shot_classifier`), image<->text retrieval recall@K, and a linear probe on the
frozen image features. Works with any model exposing `encode_image(x, normalize=True)`,
`encode_text(tokens, normalize=True)` and `tokenizer` (a callable list[str] -> LongTensor)."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

# Templates for class names: the CLIP paper's CIFAR-10 prompts (a subset that reads well for
# small silhouettes and drawings) and the single plain one.
SIMPLE_TEMPLATES = ("a photo of a {}.",)
CIFAR_TEMPLATES = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
)


@torch.no_grad()
def zero_shot_classifier(model, classnames: Sequence[str], templates: Sequence[str | Callable] = SIMPLE_TEMPLATES,
                         *, num_classes_per_batch: int | None = 10) -> torch.Tensor:
    """(embed_dim, num_classes) unit-norm class embeddings: each class name put through every
    template, encoded, averaged and renormalised (open_clip's build_zero_shot_classifier)."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("zero-shot classification needs at least one template, e.g. 'a photo of a {}.'")
    for t in templates:
        if isinstance(t, str) and "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the class name")
    was = model.training
    model.eval()
    try:
        return build_zero_shot_classifier(model, model.tokenizer, list(classnames), list(templates),
                                          num_classes_per_batch=num_classes_per_batch, device=model.logit_scale.device)
    finally:
        model.train(was)


@torch.no_grad()
def encode_images(model, images: torch.Tensor | Iterable, *, batch_size: int = 256, normalize: bool = True,
                  pre_projection: bool = False) -> torch.Tensor:
    """Encode a tensor (N, C, H, W) or an iterable of image batches / dataset items."""
    was = model.training
    model.eval()
    device = model.logit_scale.device
    fn = model.image_features if pre_projection else (lambda x: model.encode_image(x, normalize=normalize))
    out = []
    try:
        if torch.is_tensor(images):
            for i in range(0, len(images), batch_size):
                out.append(fn(images[i:i + batch_size].to(device)).float().cpu())
        else:
            for b in images:
                x = b["image"] if isinstance(b, dict) else b
                out.append(fn(x.to(device)).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        out = [model.encode_text(model.tokenize(list(texts[i:i + batch_size]))).float().cpu()
               for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """(N, num_classes) cosine similarities (both sides unit norm)."""
    return F.normalize(image_features.float(), dim=-1) @ classifier.float().to(image_features.device)


def zero_shot_accuracy(model, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                       templates: Sequence[str] = SIMPLE_TEMPLATES, *, ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Top-k zero-shot accuracy of `images` (N, C, H, W) with integer `labels` indexing classnames."""
    labels = torch.as_tensor(labels)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classnames)):
        raise ValueError(f"labels must index the {len(classnames)} class names, got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    clf = zero_shot_classifier(model, classnames, templates)
    logits = zero_shot_logits(encode_images(model, images), clf.cpu())
    out = {}
    for k in ks:
        k_ = min(k, len(classnames))
        top = logits.topk(k_, dim=-1).indices
        out[f"top{k}"] = float((top == labels[:, None]).any(-1).float().mean())
    return out


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, *,
                      text_to_image: torch.Tensor | Sequence[int] | None = None,
                      captions: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways.

    image_features (N_img, D), text_features (N_txt, D), unit norm. `text_to_image[t]` is the
    index of text t's image (default: t, one caption per image). With `captions` (one per
    text), an image counts as relevant to every text whose caption equals its own captions'
    — generated data repeats captions ("a red circle on the left"), and retrieving any image
    that fits the words is a hit.
    Returns {"t2i_R@k", "i2t_R@k"}: the share of texts whose top k images hold a relevant one,
    and of images whose top k texts hold a relevant one."""
    ni, nt = image_features.shape[0], text_features.shape[0]
    t2i = torch.arange(nt) if text_to_image is None else torch.as_tensor(text_to_image, dtype=torch.long)
    if t2i.shape != (nt,) or (nt and (int(t2i.min()) < 0 or int(t2i.max()) >= ni)):
        raise ValueError(f"text_to_image must map each of the {nt} texts to one of {ni} images")
    relevant = torch.zeros(nt, ni, dtype=torch.bool)
    relevant[torch.arange(nt), t2i] = True
    if captions is not None:
        if len(captions) != nt:
            raise ValueError(f"captions must have one entry per text ({nt}), got {len(captions)}")
        ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        cap_id = torch.tensor([ids[c] for c in captions])
        img_caps = torch.zeros(ni, len(ids), dtype=torch.bool)
        img_caps[t2i, cap_id] = True  # the captions each image was given
        relevant = img_caps[:, cap_id].T  # (nt, ni): image i has a caption equal to text t's
    sims = text_features.float().cpu() @ image_features.float().cpu().T  # (nt, ni)
    out = {}
    for k in ks:
        top_i = sims.topk(min(k, ni), dim=1).indices  # (nt, k) images per text
        out[f"t2i_R@{k}"] = float(relevant.gather(1, top_i).any(1).float().mean())
        top_t = sims.T.topk(min(k, nt), dim=1).indices  # (ni, k) texts per image
        has_text = relevant.any(0)  # images with at least one caption
        hits = relevant.T.gather(1, top_t).any(1)
        out[f"i2t_R@{k}"] = float(hits[has_text].float().mean())
    return out


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, weight_decay: float = 1e-4, max_iter: int = 200) -> dict[str, float]:
    """Multinomial logistic regression on frozen features (L-BFGS, L2 penalty, features
    standardised with the train statistics), as in the CLIP paper's linear-probe protocol.
    Returns train and test accuracy."""
    xtr, xte = train_features.float(), test_features.float()
    ytr, yte = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("linear_probe: features and labels differ in length")
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    num_classes = int(max(ytr.max(), yte.max())) + 1
    lin = torch.nn.Linear(xtr.shape[1], num_classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xtr), ytr) + weight_decay * lin.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return {"train_acc": float((lin(xtr).argmax(1) == ytr).float().mean()),
                "test_acc": float((lin(xte).argmax(1) == yte).float().mean())}


def _load_split(name: str, split: str, limit: int | None, data_kwargs: dict | None, *, spread: bool = False):
    """The first `limit` items, or with spread=True `limit` items evenly spaced over the split
    (splits stored in class order need this for a subset to hold every class)."""
    from ..data import build_dataset
    ds = build_dataset(name, split=split, **(data_kwargs or {}))
    n = len(ds) if limit is None else min(limit, len(ds))
    idx = torch.linspace(0, len(ds) - 1, n).round().long().tolist() if spread and n < len(ds) else range(n)
    items = [ds[i] for i in idx]
    return ds, torch.stack([it["image"] for it in items]), [it["caption"] for it in items], \
        torch.tensor([int(it.get("label", -1)) for it in items])


def dataset_retrieval(model, name: str, *, split: str = "test", limit: int | None = 1000,
                      data_kwargs: dict | None = None, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@K both ways over the first `limit` items of a captioned dataset split; texts
    with equal captions share their images (see retrieval_metrics)."""
    _, images, captions, _ = _load_split(name, split, limit, data_kwargs)
    img = encode_images(model, images)
    txt = encode_texts(model, captions)
    out = retrieval_metrics(img, txt, captions=captions, ks=ks)
    out["n"] = len(captions)
    out["distinct_captions"] = len(set(captions))
    return out


def dataset_zero_shot(model, name: str, *, split: str = "test", limit: int | None = None,
                      templates: Sequence[str] = SIMPLE_TEMPLATES, data_kwargs: dict | None = None,
                      classnames: Sequence[str] | None = None) -> dict:
    """Zero-shot top-1/top-5 accuracy on a labelled dataset split, class names from the
    dataset's `classes` (underscores read as spaces)."""
    ds, images, _, labels = _load_split(name, split, limit, data_kwargs)
    names = list(classnames or [c.replace("_", " ") for c in ds.classes])
    out = zero_shot_accuracy(model, images, labels, names, templates, ks=(1, 5))
    out["n"] = len(labels)
    out["chance"] = 1.0 / len(names)
    return out


def dataset_linear_probe(model, name: str, *, train_split: str = "train", test_split: str = "test",
                         n_train: int | None = 5000, n_test: int | None = 1000, data_kwargs: dict | None = None,
                         pre_projection: bool = True) -> dict:
    """Linear-probe accuracy on a labelled dataset: logistic regression on the frozen image
    features of n_train train items (None: all; a subset is spread evenly over the split, which
    may be stored in class order), scored on the first n_test items of the test split (None:
    all; the same items zero-shot evaluation with that limit uses)."""
    _, xtr, _, ytr = _load_split(name, train_split, n_train, data_kwargs, spread=True)
    _, xte, _, yte = _load_split(name, test_split, n_test, data_kwargs)
    ftr = encode_images(model, xtr, pre_projection=pre_projection)
    fte = encode_images(model, xte, pre_projection=pre_projection)
    out = linear_probe(ftr, ytr, fte, yte)
    out.update(n_train=len(ytr), n_test=len(yte))
    return out


def shapes_binding(model, *, split: str = "test", limit: int = 200, data_kwargs: dict | None = None) -> dict:
    """Does a CLIP read the whole shapes caption? Over the first `limit` two-object scenes of
    `split` whose objects differ, the share of images scoring their own caption above the
    same caption with (a) the relation reversed ("above" <-> "below", "left of" <-> "right of")
    and (b) the two objects' colours swapped; 0.5 is a bag of words. `text_cosine_relation` is
    the mean cosine between a caption's embedding and its reversed one's (1.0: the text tower
    cannot tell them apart)."""
    from ..data import build_dataset
    from ..data.shapes import caption_of, reverse_relation
    ds = build_dataset("shapes", split=split, **(data_kwargs or {}))
    images, captions, swapped = [], [], []
    for i in range(len(ds)):
        objs, rel, cap = ds.scene(i)
        if rel is None or objs[0]["colour"] == objs[1]["colour"]:  # a colour swap would be the same scene
            continue
        images.append(ds[i]["image"])
        captions.append(cap)
        a, b = objs
        swapped.append(caption_of([dict(a, colour=b["colour"]), dict(b, colour=a["colour"])], rel))
        if len(captions) == limit:
            break
    if not captions:
        raise ValueError(f"shapes split {split!r} has no two-object scenes to test binding on")
    img = encode_images(model, torch.stack(images))
    true, rev, swap = (encode_texts(model, c) for c in (captions, [reverse_relation(c) for c in captions], swapped))
    score = lambda t: (img * t).sum(-1)  # noqa: E731 (unit vectors: cosine)
    return {"relation_reversed": float((score(true) > score(rev)).float().mean()),
            "colours_swapped": float((score(true) > score(swap)).float().mean()),
            "text_cosine_relation": float((true * rev).sum(-1).mean()), "n": len(captions)}
