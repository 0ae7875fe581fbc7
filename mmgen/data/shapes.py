"""Shapes: procedurally drawn 32x32 scenes with compositional captions, and a checker.

Scenes hold one or two objects on black. Each object is a (colour, shape) pair at a random
position and size (7-13 px in two-object scenes, 8-16 px alone), drawn 4x supersampled and
box-filtered down (antialiased edges).

Caption grammar::

    caption  := object | object " " relation " " object
    object   := "a " colour " " shape
    colour   := red | green | blue | yellow | magenta | cyan
    shape    := circle | square | triangle | diamond | cross
    relation := above | below | left of | right of

e.g. "a red circle above a blue square". In a two-object scene the relation's axis
dominates: for "above" the first object's box ends at least 2 px above the second's, and
the vertical centre distance exceeds the horizontal one by 2 px or more.

Splits (every item is a pure function of ``(seed, split, index)``, so any index is valid;
scenes are partitioned by a crc32 hash of their description -- val and test each own 1/40
of all possible scenes and train the rest -- so no scene occurs in two splits):

* ``train``: the seeded training stream, ``length`` items (default 100,000; raise it at will,
  or use ``ShapesStream`` for an endless iterable). Objects never use a held-out pair.
* ``val`` / ``test``: fixed 1,000-item sets drawn the same way (no held-out pairs).
* ``heldout_val`` / ``heldout_test``: 1,000 items where every scene contains at least one
  held-out (colour, shape) pair -- compositional generalisation.

Holding out combinations: ``build_dataset("shapes", split="train", holdout=[("red",
"circle"), ("blue", "square")])``; ``holdout="default"`` uses ``DEFAULT_HOLDOUT`` (one pair
per colour, every colour and every shape still seen in training); ``holdout=None`` (the
default) holds nothing out (then the ``heldout_*`` splits are refused).

The checker ``check(image, caption)`` reads colour, shape and relative position back from
an image (tensor (3,H,W) in [-1,1], uint8 HWC array or PIL image) and reports each
attribute: ``{"count", "colour", "shape", "relation", "correct", "found", "expected"}``.
``mmgen shapes-check --n 2000`` prints its accuracy on rendered ground truth and
on shuffled captions.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "diamond", "cross"]
RELATIONS = ["above", "below", "left of", "right of"]
PAIRS = [(c, s) for c in COLOUR_NAMES for s in SHAPES]  # the 30 classes, label = index
CLASSES = [f"{c} {s}" for c, s in PAIRS]
# one pair per colour, each shape held out at least once, every colour/shape still in train
DEFAULT_HOLDOUT = [("red", "circle"), ("green", "square"), ("blue", "triangle"),
                   ("yellow", "diamond"), ("magenta", "cross"), ("cyan", "circle")]

IMAGE_SIZE = 32
SS = 4  # supersampling factor
SIZE_TWO = (7, 13)
SIZE_ONE = (8, 16)
MARGIN, GAP = 1, 2
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "heldout_val": 3, "heldout_test": 4}
EVAL_SIZE = 1000


# ------------------------------------------------------------------------------------------
# rendering
def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill):
    """Draw ``shape`` filling ``box=(x0, y0, x1, y1)`` (x1/y1 exclusive) in supersampled pixels."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        tw, th = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle([x0, cy - th / 2, x1 - 1, cy + th / 2 - 1], fill=fill)
        draw.rectangle([cx - tw / 2, y0, cx + tw / 2 - 1, y1 - 1], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(objects, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Render objects ``[{"colour", "shape", "x", "y", "size"}]`` (pixel units at
    ``image_size``) to a uint8 (H, W, 3) array on black."""
    im = Image.new("RGB", (image_size * SS, image_size * SS))
    d = ImageDraw.Draw(im)
    for o in objects:
        x, y, s = o["x"] * SS, o["y"] * SS, o["size"] * SS
        _draw_shape(d, o["shape"], (x, y, x + s, y + s), COLOURS[o["colour"]])
    return np.asarray(im.resize((image_size, image_size), Image.BOX))


DISTORTIONS = ("stretch", "bump", "merge")


def render_distorted(objects, rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene of ``render(objects)`` with one object, drawn at random, no longer clearly
    its shape: stretched 1.5-2x along one axis ("stretch"), with an overlapping disc of its
    colour ("bump"), or merged with an overlapping second shape of its colour ("merge"). A
    hard-negative image for its own caption: a reranker must not call these "a square"."""
    k = int(rng.integers(len(objects)))
    kind = DISTORTIONS[int(rng.integers(len(DISTORTIONS)))]
    n = image_size * SS
    im = Image.new("RGB", (n, n))
    d = ImageDraw.Draw(im)
    for j, o in enumerate(objects):
        x, y, size, fill = o["x"] * SS, o["y"] * SS, o["size"] * SS, COLOURS[o["colour"]]
        if j != k:
            _draw_shape(d, o["shape"], (x, y, x + size, y + size), fill)
            continue
        cx, cy = x + size / 2, y + size / 2
        if kind == "stretch":  # the long side f times the short one, the area about the same
            f = float(rng.uniform(1.5, 2.0))
            long, short = size * f ** 0.5, size / f ** 0.5
            w, h = (long, short) if rng.random() < 0.5 else (short, long)
            _draw_shape(d, o["shape"], (int(max(0, cx - w / 2)), int(max(0, cy - h / 2)),
                                        int(min(n, cx + w / 2)), int(min(n, cy + h / 2))), fill)
        else:
            _draw_shape(d, o["shape"], (x, y, x + size, y + size), fill)
            other = "circle" if kind == "bump" else SHAPES[int(rng.integers(len(SHAPES)))]
            r = size * (float(rng.uniform(0.3, 0.45)) if kind == "bump" else float(rng.uniform(0.7, 0.9)))
            a = float(rng.uniform(0, 2 * np.pi))  # the second part's centre sits on the object's edge
            ox, oy = cx + np.cos(a) * size / 2, cy + np.sin(a) * size / 2
            _draw_shape(d, other, (int(ox - r / 2), int(oy - r / 2), int(ox + r / 2), int(oy + r / 2)), fill)
    return np.asarray(im.resize((image_size, image_size), Image.BOX))


def caption_of(objects, relation: str | None = None) -> str:
    first = f"a {objects[0]['colour']} {objects[0]['shape']}"
    if len(objects) == 1:
        return first
    return f"{first} {relation} a {objects[1]['colour']} {objects[1]['shape']}"


def _place_two(rng, s1, s2, relation, n=IMAGE_SIZE):
    """Positions (x1, y1, x2, y2) so that object 1 is ``relation`` object 2."""
    lo, hi = MARGIN, n - MARGIN
    while True:
        # main axis: first-in-reading-order object a, then b, disjoint with >= GAP between
        a_size, b_size = (s1, s2) if relation in ("above", "left of") else (s2, s1)
        a = int(rng.integers(lo, hi - (a_size + GAP + b_size) + 1))
        b = int(rng.integers(a + a_size + GAP, hi - b_size + 1))
        p1, p2 = (a, b) if relation in ("above", "left of") else (b, a)
        # cross axis: free, but the main axis must dominate the centre offset
        q1 = int(rng.integers(lo, hi - s1 + 1))
        q2 = int(rng.integers(lo, hi - s2 + 1))
        d_main = abs((p1 + s1 / 2) - (p2 + s2 / 2))
        d_cross = abs((q1 + s1 / 2) - (q2 + s2 / 2))
        if d_main >= d_cross + 2:
            break
    if relation in ("above", "below"):
        return q1, p1, q2, p2
    return p1, q1, p2, q2


OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


NEGATIVE_KINDS = ("relation", "swap", "replace")


def hard_negative(objects, relation, rng: np.random.Generator, allowed=PAIRS, weights=None) -> str:
    """A caption that differs from the scene's in exactly one binding, for contrastive
    training with hard negatives (NegCLIP, Yuksekgonul et al. 2023). The kind of change is
    drawn first, uniformly among those possible: the relation reversed, the two objects'
    colours or shapes swapped, or one object's colour or shape replaced (the last is what
    in-batch negatives already teach; the first two they almost never do). Every (colour,
    shape) pair it writes is in ``allowed``, so held-out pairs stay unseen; changes that would
    describe the same scene (reversing the relation of two identical objects) are never drawn.
    ``weights`` ({kind: weight}, kinds as in ``NEGATIVE_KINDS``) draws the kind in those
    proportions among the kinds possible for the scene instead of uniformly."""
    pairs = [(o["colour"], o["shape"]) for o in objects]
    kinds: dict[str, list] = {"relation": [], "swap": [], "replace": []}
    if relation is not None and pairs[0] != pairs[1]:
        kinds["relation"].append((pairs, OPPOSITE[relation]))
    if len(pairs) == 2:
        (c1, s1), (c2, s2) = pairs
        for swapped in ([(c2, s1), (c1, s2)], [(c1, s2), (c2, s1)]):
            if swapped != pairs and all(p in allowed for p in swapped):
                kinds["swap"].append((swapped, relation))
    for k, (c, s) in enumerate(pairs):
        for new in [(c2, s) for c2 in COLOUR_NAMES if c2 != c] + [(c, s2) for s2 in SHAPES if s2 != s]:
            if new in allowed:
                changed = list(pairs)
                changed[k] = new
                kinds["replace"].append((changed, relation))
    possible = [k for k, v in kinds.items() if v]
    if weights is None:
        kind = possible[int(rng.integers(len(possible)))]
    else:  # a scene that allows none of the weighted kinds falls back to a uniform draw
        w = np.array([weights.get(k, 0.0) for k in possible])
        w = w if w.sum() > 0 else np.ones(len(possible))
        kind = possible[int(rng.choice(len(possible), p=w / w.sum()))]
    new_pairs, rel = kinds[kind][int(rng.integers(len(kinds[kind])))]
    return caption_of([dict(colour=c, shape=s) for c, s in new_pairs], rel)


def _normalise_holdout(holdout):
    if holdout is None:
        return []
    if isinstance(holdout, str):
        if holdout != "default":
            raise ValueError(f"holdout must be 'default', None or a list of (colour, shape) pairs, got {holdout!r}")
        holdout = DEFAULT_HOLDOUT
    out = []
    for pair in holdout:
        if isinstance(pair, str):  # "red circle"
            pair = tuple(pair.split())
        c, s = pair
        if c not in COLOURS or s not in SHAPES:
            raise ValueError(f"holdout pair {pair!r}: colour must be one of {COLOUR_NAMES}, shape one of {SHAPES}")
        out.append((c, s))
    allowed = [p for p in PAIRS if p not in out]
    if not allowed:
        raise ValueError("holdout removes every (colour, shape) pair; nothing left to train on")
    return sorted(set(out), key=PAIRS.index)


def sample_scene(rng: np.random.Generator, allowed, required=None, p_two: float = 0.75,
                 image_size: int = IMAGE_SIZE):
    """Sample one scene: returns (objects, relation or None, caption). Objects' pairs come
    from ``allowed``; if ``required`` is given, one object uses a pair from it."""
    two = rng.random() < p_two
    pool = [allowed[int(i)] for i in rng.integers(len(allowed), size=2)]
    if required:
        pool[0] = required[int(rng.integers(len(required)))]
        if two and rng.random() < 0.5:
            pool = pool[::-1]
    if not two:
        s = int(rng.integers(SIZE_ONE[0], SIZE_ONE[1] + 1))
        x, y = (int(v) for v in rng.integers(MARGIN, image_size - MARGIN - s + 1, size=2))
        objs = [dict(colour=pool[0][0], shape=pool[0][1], x=x, y=y, size=s)]
        return objs, None, caption_of(objs)
    relation = RELATIONS[int(rng.integers(4))]
    s1, s2 = (int(v) for v in rng.integers(SIZE_TWO[0], SIZE_TWO[1] + 1, size=2))
    x1, y1, x2, y2 = _place_two(rng, s1, s2, relation, image_size)
    objs = [dict(colour=pool[0][0], shape=pool[0][1], x=x1, y=y1, size=s1),
            dict(colour=pool[1][0], shape=pool[1][1], x=x2, y=y2, size=s2)]
    return objs, relation, caption_of(objs, relation)


N_BUCKETS = 40
_SPLIT_BUCKET = {"val": 0, "test": 1}  # train takes buckets 2..39 (95% of all scenes)
_EVAL_BUCKETS = set(_SPLIT_BUCKET.values())


def scene_bucket(objects, relation) -> int:
    """Deterministic bucket of a scene description (crc32; Python's hash() is salted)."""
    key = ";".join(f"{o['colour']},{o['shape']},{o['x']},{o['y']},{o['size']}" for o in objects)
    return zlib.crc32(f"{key}|{relation}".encode()) % N_BUCKETS


def _to_float(img_u8: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]."""
    return torch.from_numpy(img_u8.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ShapesDataset(torch.utils.data.Dataset):
    """Map-style shapes split. Item ``i`` is a pure function of ``(seed, split, i)``.

    Items: ``{"image": (3, 32, 32) float in [-1, 1], "label": index of the first object's
    (colour, shape) pair in ``classes``, "caption": str}``, and with ``negatives=True`` a
    ``"negative_caption"`` (``hard_negative``: one binding changed; ``negatives={"relation": 2,
    "swap": 1, "replace": 1}`` draws the kinds of change in those proportions). ``scene(i)``
    gives the objects.
    With ``negative_images=True`` a ``"negative_image"``: the scene with one object distorted
    (``render_distorted``), a hard negative for the caption. ``transform`` (a torchvision v2
    transform) receives the uint8 (3, H, W) image tensor (the negative image is not transformed).
    With ``sample_bank=PATH`` (built by ``scripts/sample_bank.py`` from the train split's first
    items) the train split is the bank's items: the image is the scene's VQ reconstruction and
    the ``"negative_image"`` a DALL-E sample for its caption, so a reranker learns to rank a
    correct drawing above what the generator draws, both through the same decoder. Other
    splits ignore it (the bank holds train scenes only) and draw their scenes as usual.
    """

    def __init__(self, split: str = "train", *, holdout=None, seed: int = 0, length: int | None = None,
                 p_two: float = 0.75, transform=None, negatives: bool | dict = False,
                 negative_images: bool = False, sample_bank: str | os.PathLike | None = None):
        if split not in SPLIT_CODES:
            raise ValueError(f"shapes split must be one of {list(SPLIT_CODES)}, got {split!r}")
        self.split, self.seed, self.p_two, self.transform = split, seed, p_two, transform
        self.negative_weights = None
        if isinstance(negatives, dict):
            bad = {k: v for k, v in negatives.items() if k not in NEGATIVE_KINDS or not float(v) >= 0}
            if bad or not sum(negatives.values()) > 0:
                raise ValueError(f"negatives weights must map kinds {list(NEGATIVE_KINDS)} to weights >= 0, "
                                 f"at least one > 0; got {negatives!r}")
            self.negative_weights = {k: float(v) for k, v in negatives.items()}
        self.negatives = bool(negatives)
        self.negative_images = bool(negative_images)
        self.holdout = _normalise_holdout(holdout)
        self.allowed = [p for p in PAIRS if p not in self.holdout]
        self.required = None
        if split.startswith("heldout"):
            if not self.holdout:
                raise ValueError(f"split {split!r} needs held-out pairs: pass holdout='default' "
                                 f"or holdout=[(colour, shape), ...]")
            self.required = self.holdout
        self.length = length if length is not None else (100_000 if split == "train" else EVAL_SIZE)
        self.classes = list(CLASSES)
        self.bank = None
        if sample_bank is not None and split == "train":
            if negative_images:
                raise ValueError("pass negative_images=True (distorted renders) or sample_bank (generator samples) "
                                 "as the negative images, not both")
            self.bank = load_sample_bank(sample_bank)
            self._check_bank(sample_bank, length)
            self.length = len(self.bank["meta"]["captions"])

    def _check_bank(self, path, length) -> None:
        """The bank must hold this split's first items: same seed, held-out pairs and p_two."""
        meta, n = self.bank["meta"], len(self.bank["meta"]["captions"])
        mine = {"seed": self.seed, "holdout": sorted(map(list, self.holdout)), "p_two": self.p_two}
        theirs = {k: meta.get(k) for k in mine}
        if theirs != mine:
            raise ValueError(f"sample bank {path} holds train items for {theirs}; this split draws {mine}: build "
                             f"the bank with these settings (scripts/sample_bank.py)")
        if length is not None and length != n:
            raise ValueError(f"sample bank {path} holds {n} items; length={length} asks for another number "
                             f"(leave length unset)")
        for i in (0, n - 1):
            if self.scene(i)[2] != meta["captions"][i]:
                raise ValueError(f"sample bank {path}: item {i} is {meta['captions'][i]!r}, this split draws "
                                 f"{self.scene(i)[2]!r} (built by another version of the shapes grammar)")

    def __len__(self):
        return self.length

    def scene(self, i: int):
        """(objects, relation, caption) of item ``i``. Scenes are partitioned by a hash of
        their full description (``scene_bucket``): val and test only accept scenes of their
        own bucket and train only the rest, so the splits are disjoint, not just unlikely
        to collide."""
        rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(i)])
        want = _SPLIT_BUCKET.get(self.split.replace("heldout_", ""))
        while True:
            objs, rel, cap = sample_scene(rng, self.allowed, self.required, self.p_two)
            b = scene_bucket(objs, rel)
            if (want is None and b not in _EVAL_BUCKETS) or b == want:
                return objs, rel, cap

    def __getitem__(self, i: int):
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for shapes {self.split} of length {self.length}")
        i = i % self.length
        objs, relation, caption = self.scene(i)
        img = render(objs) if self.bank is None else self.bank["real"][i].permute(1, 2, 0).numpy()
        label = PAIRS.index((objs[0]["colour"], objs[0]["shape"]))
        if self.transform is not None:
            t = self.transform(torch.from_numpy(img.copy()).permute(2, 0, 1))
            image = t.float().div(127.5).sub(1.0) if t.dtype == torch.uint8 else t
        else:
            image = _to_float(img)
        item = {"image": image, "label": label, "caption": caption}
        if self.negatives:
            rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], i, 1])
            item["negative_caption"] = hard_negative(objs, relation, rng, self.allowed, self.negative_weights)
        if self.negative_images:
            rng = np.random.default_rng([self.seed, SPLIT_CODES[self.split], i, 2])
            item["negative_image"] = _to_float(render_distorted(objs, rng))
        if self.bank is not None:
            item["negative_image"] = self.bank["generated"][i].float().div(127.5).sub(1.0)
        return item

    def captions(self) -> list[str]:
        return [self.scene(i)[2] for i in range(self.length)]


def load_sample_bank(path) -> dict:
    """A file of ``scripts/sample_bank.py``: {"real": uint8 (N, 3, H, W) VQ reconstructions of
    train items 0..N-1, "generated": uint8 (N, 3, H, W) one DALL-E sample per caption, "meta":
    {"captions": [...], "seed", "holdout", "p_two", "model", ...}}."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sample bank at {path}: build it with scripts/sample_bank.py")
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "null") or "null")
        if not isinstance(meta, dict) or "captions" not in meta or set(f.keys()) != {"real", "generated"}:
            raise ValueError(f"{path} is not a sample bank (scripts/sample_bank.py writes tensors 'real' and "
                             f"'generated' and the captions in its metadata)")
        out = {k: f.get_tensor(k) for k in ("real", "generated")}
    n = len(meta["captions"])
    if out["real"].shape != out["generated"].shape or out["real"].shape[0] != n or out["real"].dtype != torch.uint8:
        raise ValueError(f"{path}: expected uint8 'real' and 'generated' of {n} images each, got "
                         f"{tuple(out['real'].shape)} and {tuple(out['generated'].shape)}")
    return {**out, "meta": meta}


class ShapesStream(torch.utils.data.IterableDataset):
    """Endless seeded training stream (each DataLoader worker gets its own sub-stream)."""

    def __init__(self, *, holdout=None, seed: int = 0, p_two: float = 0.75, transform=None,
                 negatives: bool | dict = False, negative_images: bool = False):
        self.base = ShapesDataset("train", holdout=holdout, seed=seed, p_two=p_two, transform=transform,
                                  length=2**62, negatives=negatives, negative_images=negative_images)
        self.classes = self.base.classes

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in itertools.count(wid, nw):
            yield self.base[i]


def shapes(split: str = "train", *, stream: bool = False, **kw):
    """``build_dataset("shapes", split, holdout=..., seed=0, length=..., stream=False)``."""
    if stream:
        if split != "train":
            raise ValueError(f"stream=True is for split='train', got {split!r}")
        return ShapesStream(**kw)
    return ShapesDataset(split, **kw)


def all_captions(holdout=None) -> list[str]:
    """Every caption the grammar can produce (for pruning a BPE vocabulary)."""
    objs = [f"a {c} {s}" for c in COLOUR_NAMES for s in SHAPES]
    return objs + [f"{a} {r} {b}" for a in objs for r in RELATIONS for b in objs]


# ------------------------------------------------------------------------------------------
# checker
_CAPTION_RE = re.compile(
    r"^\s*an? (?P<c1>\w+) (?P<s1>\w+)(?: (?P<rel>above|below|left of|right of) an? (?P<c2>\w+) (?P<s2>\w+))?\s*\.?\s*$")
_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32) / 255.0  # (6, 3)


def parse_caption(caption: str):
    """'a red circle above a blue square' -> ([("red","circle"), ("blue","square")], "above")."""
    m = _CAPTION_RE.match(caption.lower())
    if not m:
        raise ValueError(f"caption {caption!r} does not follow the shapes grammar "
                         f"'a <colour> <shape> [<relation> a <colour> <shape>]'")
    objs = [(m["c1"], m["s1"])] + ([(m["c2"], m["s2"])] if m["rel"] else [])
    for c, s in objs:
        if c not in COLOURS or s not in SHAPES:
            raise ValueError(f"caption {caption!r}: colour must be one of {COLOUR_NAMES} and shape "
                             f"one of {SHAPES}, got {c!r} {s!r}")
    return objs, m["rel"]


def reverse_relation(caption: str) -> str:
    """'a red circle above a blue square' -> 'a red circle below a blue square' (left of <->
    right of likewise); a one-object caption comes back as it is."""
    objs, rel = parse_caption(caption)
    if rel is None:
        return caption
    return caption_of([dict(colour=c, shape=s) for c, s in objs], OPPOSITE[rel])


def canonical_caption(caption: str) -> str:
    """The same scene with one relation word per axis: 'a red circle below a blue square' ->
    'a blue square above a red circle' (right of -> left of likewise), so the object named
    first is always the upper or the left one. Other captions, and text outside the grammar,
    come back as they are."""
    try:
        objs, rel = parse_caption(caption)
    except ValueError:
        return caption
    if rel not in ("below", "right of"):
        return caption
    return caption_of([dict(colour=c, shape=s) for c, s in objs[::-1]], OPPOSITE[rel])


def _to_uint8_hwc(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        x = image.detach().cpu().float()
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"check expects an image tensor of shape (3, H, W), got {tuple(x.shape)}")
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(1, 2, 0).numpy()
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"check expects a (H, W, 3) uint8 array, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"check expects uint8 arrays (or float tensors in [-1, 1]), got {a.dtype}")
    return a


def _components(labels: np.ndarray):
    """8-connected components of equal non-negative values. Returns list of (colour, mask)."""
    H, W = labels.shape
    comp = -np.ones((H, W), dtype=np.int64)
    out = []
    ys, xs = np.nonzero(labels >= 0)
    for y0, x0 in zip(ys.tolist(), xs.tolist()):
        if comp[y0, x0] >= 0:
            continue
        k, col = len(out), labels[y0, x0]
        stack, pix = [(y0, x0)], []
        comp[y0, x0] = k
        while stack:
            y, x = stack.pop()
            pix.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < H and 0 <= u < W and comp[v, u] < 0 and labels[v, u] == col:
                        comp[v, u] = k
                        stack.append((v, u))
        out.append((int(col), np.array(pix)))
    return out


# Strictness of the checker. Rendered ground truth matches its template exactly (soft IoU 1.0);
# an object counts as a shape only when it is clearly that shape: a soft IoU of at least
# SHAPE_MIN_IOU with the best template and SHAPE_MIN_MARGIN more than with any other shape.
# Shapes are drawn in square boxes, so a visible box whose sides differ by more than
# MAX_BOX_SKEW px (stretched shapes, bars, merged objects) is unknown before any matching.
SHAPE_MIN_IOU = 0.80
SHAPE_MIN_MARGIN = 0.05
MAX_BOX_SKEW = 2
UNKNOWN = "unknown"
# Templates are also matched slightly blurred (Gaussian sigma in px), so a soft-edged but
# unmistakable shape, as decoders draw them, is still named; heavier blur is unknown.
TEMPLATE_BLURS = (0.0, 0.7)
_PAD = 2  # coverage is compared over the object's box plus this margin (antialiased fringe)


@lru_cache(maxsize=8192)
def _template(shape: str, s: int, ox: int, oy: int, bw: int, bh: int, blur: float = 0.0):
    """Antialiased coverage (float, [0, 1]) of ``shape`` drawn in an (s, s) box at offset
    (ox, oy) from the top-left of a (bw, bh) object box, over that box plus _PAD px each side;
    returns (coverage inside that crop, total coverage including what falls outside it)."""
    Q = s + _PAD  # canvas margin so no part of the template is clipped away
    W, H = bw + 2 * Q, bh + 2 * Q
    im = Image.new("L", (W * SS, H * SS))
    x0, y0 = (ox + Q) * SS, (oy + Q) * SS
    _draw_shape(ImageDraw.Draw(im), shape, (x0, y0, x0 + s * SS, y0 + s * SS), 255)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur * SS))
    full = np.asarray(im.resize((W, H), Image.BOX), dtype=np.float32) / 255.0
    m = Q - _PAD
    return full[m:m + bh + 2 * _PAD, m:m + bw + 2 * _PAD], float(full.sum())


def shape_scores(coverage: np.ndarray, bw: int, bh: int) -> dict[str, float]:
    """Best soft IoU (sum of minima over sum of maxima) of each shape's template with an
    object's ``coverage``: a (bh + 2*_PAD, bw + 2*_PAD) float map in [0, 1] around its
    visible (bw, bh) box. Square template sizes from the box's longer side up to two pixels
    more (antialiased edges under half coverage shrink the visible box) and every offset
    that keeps the template over the box are searched."""
    area = float(coverage.sum())
    best = {}
    for shape in SHAPES:
        top = 0.0
        for blur in TEMPLATE_BLURS:
            for s in range(max(bw, bh), max(bw, bh) + 3):
                for ox in range(bw - s, 1):
                    for oy in range(bh - s, 1):
                        t, t_area = _template(shape, s, ox, oy, bw, bh, blur)
                        inter = float(np.minimum(t, coverage).sum())
                        top = max(top, inter / max(area + t_area - inter, 1e-6))
        best[shape] = top
    return best


def classify_shape(coverage: np.ndarray, bw: int, bh: int) -> tuple[str, float]:
    """The shape an object clearly is, with its soft IoU, or ("unknown", best IoU): see
    SHAPE_MIN_IOU, SHAPE_MIN_MARGIN and MAX_BOX_SKEW."""
    if abs(bw - bh) > MAX_BOX_SKEW:
        return UNKNOWN, 0.0
    scores = shape_scores(coverage, bw, bh)
    ranked = sorted(scores, key=scores.get, reverse=True)
    first, second = scores[ranked[0]], scores[ranked[1]]
    if first < SHAPE_MIN_IOU or first - second < SHAPE_MIN_MARGIN:
        return UNKNOWN, first
    return ranked[0], first


def detect(image, min_area: int | None = None) -> list[dict]:
    """Find coloured objects: pixels whose brightest channel is >= 50% are assigned the
    palette colour nearest to their brightness-normalised RGB; 8-connected same-colour
    components of at least ``min_area`` px (default 12 at 32x32, scaled with image area)
    become objects ``{"colour", "shape", "iou", "bbox": (x0, y0, x1, y1), "centre": (x, y), "area"}``,
    largest first. ``shape`` is "unknown" unless the object is clearly one of SHAPES
    (classify_shape), judged on its soft coverage: the pixels of its colour around its box,
    brightness relative to the object's own median, so blurred or fringed objects are not
    squared off by the 50 % threshold."""
    img = _to_uint8_hwc(image).astype(np.float32) / 255.0  # (H, W, 3)
    H, W, _ = img.shape
    if min_area is None:
        min_area = max(4, int(round(12 * H * W / IMAGE_SIZE**2)))
    v = img.max(axis=2)  # (H, W)
    fg = v >= 0.5
    norm = img / np.maximum(v, 1e-6)[..., None]
    d = ((norm[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)  # (H, W, 6)
    nearest = d.argmin(-1)  # (H, W) palette index of every pixel, dim ones included
    labels = np.where(fg, nearest, -1)
    vpad = np.pad(v, _PAD)
    npad = np.pad(nearest, _PAD, constant_values=-1)
    objs = []
    for col, pix in _components(labels):
        if len(pix) < min_area:
            continue
        y0, x0 = pix.min(0)
        y1, x1 = pix.max(0) + 1
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        ref = float(np.median(v[pix[:, 0], pix[:, 1]]))
        # (y1 - y0 + 2*_PAD, x1 - x0 + 2*_PAD): this colour's coverage around the box; the
        # object's own pixels count fully wherever they are, other colours never
        crop_v = vpad[y0:y1 + 2 * _PAD, x0:x1 + 2 * _PAD]
        crop_n = npad[y0:y1 + 2 * _PAD, x0:x1 + 2 * _PAD]
        coverage = np.where(crop_n == col, np.clip(crop_v / ref, 0.0, 1.0), 0.0).astype(np.float32)
        shape, iou = classify_shape(coverage, x1 - x0, y1 - y0)
        objs.append({"colour": COLOUR_NAMES[col], "shape": shape, "iou": iou,
                     "bbox": (x0, y0, x1, y1),
                     "centre": ((x0 + x1) / 2, (y0 + y1) / 2),  # bbox centre (a triangle's
                     # pixel centroid sits low, so relations use the box)
                     "area": int(len(pix))})
    objs.sort(key=lambda o: -o["area"])
    return objs


def relation_of(a: dict, b: dict) -> str:
    """Relation of object a to object b by the dominant axis of their box-centre offset."""
    dx = a["centre"][0] - b["centre"][0]
    dy = a["centre"][1] - b["centre"][1]
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def check(image, caption: str, found: list[dict] | None = None) -> dict:
    """Check an image against a shapes caption, attribute by attribute.

    Caption objects are matched to detected objects by the assignment that agrees on the
    most attributes; then ``colour`` / ``shape`` are True when every caption object's
    matched object has that colour / shape, ``relation`` (None for one-object captions) when
    the matched pair stands in the stated relation, ``count`` when the number of detected
    objects equals the number named, and ``correct`` when all of them hold.
    """
    expected, rel = parse_caption(caption)
    if found is None:
        found = detect(image)
    cands = found[:6]
    best, best_score = None, -1
    for perm in itertools.permutations(range(len(cands)), min(len(expected), len(cands))):
        score = sum((cands[j]["colour"] == c) + (cands[j]["shape"] == s)
                    for (c, s), j in zip(expected, perm))
        if len(perm) == 2 and rel is not None:
            score += relation_of(cands[perm[0]], cands[perm[1]]) == rel
        if score > best_score:
            best, best_score = perm, score
    best = best or ()
    complete = len(best) == len(expected)
    colour = complete and all(cands[j]["colour"] == c for (c, _), j in zip(expected, best))
    shape = complete and all(cands[j]["shape"] == s for (_, s), j in zip(expected, best))
    relation = drawn = None
    if rel is not None and complete:
        drawn = relation_of(cands[best[0]], cands[best[1]])
    if rel is not None:
        relation = drawn == rel
    count = len(found) == len(expected)
    correct = bool(count and colour and shape and relation is not False)
    return {"count": bool(count), "colour": bool(colour), "shape": bool(shape),
            "relation": relation if relation is None else bool(relation), "correct": correct,
            "expected": {"objects": expected, "relation": rel}, "found": found, "drawn_relation": drawn}


def check_batch(images, captions) -> dict:
    """Mean of each attribute over a batch (relation over two-object captions only)."""
    if len(images) != len(captions):
        raise ValueError(f"check_batch: {len(images)} images but {len(captions)} captions")
    rs = [check(im, c) for im, c in zip(images, captions)]
    out = {k: float(np.mean([r[k] for r in rs])) for k in ("count", "colour", "shape", "correct")}
    rel = [r["relation"] for r in rs if r["relation"] is not None]
    out["relation"] = float(np.mean(rel)) if rel else float("nan")
    out["n"] = len(rs)
    return out


def _truth(objs, rel, caption) -> dict:
    """What a perfect checker would report: the checker applied to the scene's own metadata."""
    found = [{"colour": o["colour"], "shape": o["shape"],
              "centre": (o["x"] + o["size"] / 2, o["y"] + o["size"] / 2)} for o in objs]
    return check(None, caption, found=found)


def near_misses(colour: str = "red") -> list[tuple[str, np.ndarray, set[str]]]:
    """The kept set of near-miss renderings the checker must reject or name correctly:
    ``(name, (32, 32, 3) uint8 image, shapes it may be called)`` with "unknown" always
    allowed. Each case is drawn sharp and blurred (Gaussian sigma 1.5 px), as decoders and
    samplers soften edges."""
    fill = COLOURS[colour]
    k = SS

    def star(r_out, r_in):  # four-pointed star around the centre (16, 16)
        pts = []
        for i in range(8):
            r = r_out if i % 2 == 0 else r_in
            a = np.pi / 2 * (i // 2) + (np.pi / 4 if i % 2 else 0.0) - np.pi / 2
            pts.append(((16 + r * np.cos(a)) * k, (16 + r * np.sin(a)) * k))
        return lambda d: d.polygon(pts, fill=fill)

    cases = {
        "stretched square (2:1 bar)": (lambda d: d.rectangle([8 * k, 12 * k, 24 * k - 1, 20 * k - 1], fill=fill), set()),
        "stretched square (3:2)": (lambda d: d.rectangle([8 * k, 10 * k, 23 * k - 1, 20 * k - 1], fill=fill), set()),
        "stretched circle": (lambda d: d.ellipse([6 * k, 10 * k, 26 * k - 1, 19 * k - 1], fill=fill), set()),
        "rounded square": (lambda d: d.rounded_rectangle([8 * k, 8 * k, 22 * k - 1, 22 * k - 1], radius=4 * k, fill=fill), set()),
        "four-pointed star": (star(12, 2.8), {"cross"}),  # thin points: blurred, it is a plus
        "fat four-pointed star": (star(10, 4.2), set()),
        "fat plus sign": (lambda d: (d.rectangle([8 * k, 13 * k, 24 * k - 1, 19 * k - 1], fill=fill),
                                      d.rectangle([12 * k, 8 * k, 20 * k - 1, 24 * k - 1], fill=fill)), {"cross"}),
        "blob (two overlapping discs)": (lambda d: (d.ellipse([8 * k, 8 * k, 20 * k, 18 * k], fill=fill),
                                                    d.ellipse([12 * k, 12 * k, 24 * k, 24 * k], fill=fill)), set()),
        "two merged squares": (lambda d: (d.rectangle([6 * k, 10 * k, 16 * k - 1, 20 * k - 1], fill=fill),
                                          d.rectangle([16 * k, 12 * k, 26 * k - 1, 22 * k - 1], fill=fill)), set()),
        "circle merged into a square": (lambda d: (d.rectangle([6 * k, 8 * k, 18 * k - 1, 20 * k - 1], fill=fill),
                                                   d.ellipse([14 * k, 12 * k, 26 * k - 1, 24 * k - 1], fill=fill)), set()),
    }
    out = []
    for name, (draw_fn, allowed) in cases.items():
        im = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k))
        draw_fn(ImageDraw.Draw(im))
        for tag, img in (("", im), (", blurred", im.filter(ImageFilter.GaussianBlur(1.5 * k)))):
            out.append((name + tag, np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)), allowed | {UNKNOWN}))
    return out


def confusion(images, scenes, max_dist: float = 3.0) -> np.ndarray:
    """Shape confusion counts: rows are the drawn shapes (SHAPES), columns what the checker
    calls the object found at each drawn object's place (SHAPES, "unknown", "missing": no
    detected object's box centre within ``max_dist`` px of it)."""
    cols = SHAPES + [UNKNOWN, "missing"]
    m = np.zeros((len(SHAPES), len(cols)), dtype=np.int64)
    for img, (objs, _, _) in zip(images, scenes):
        found = detect(img)
        for o in objs:
            cx, cy = o["x"] + o["size"] / 2, o["y"] + o["size"] / 2
            near = [f for f in found if abs(f["centre"][0] - cx) <= max_dist and abs(f["centre"][1] - cy) <= max_dist]
            got = min(near, key=lambda f: abs(f["centre"][0] - cx) + abs(f["centre"][1] - cy))["shape"] if near else "missing"
            m[SHAPES.index(o["shape"]), cols.index(got)] += 1
    return m


def format_confusion(m: np.ndarray) -> str:
    cols = SHAPES + [UNKNOWN, "missing"]
    lines = ["| drawn \\ read | " + " | ".join(cols) + " | correct |", "|---" * (len(cols) + 2) + "|"]
    for i, s in enumerate(SHAPES):
        n = max(int(m[i].sum()), 1)
        lines.append(f"| {s} | " + " | ".join(str(int(v)) for v in m[i]) + f" | {100 * m[i, i] / n:.1f} % |")
    return "\n".join(lines)


def evaluate_checker(n: int = 2000, seed: int = 1, split: str = "test", noise: float = 0.0,
                     blur: float = 0.0) -> dict:
    """Checker accuracy on ``n`` rendered scenes with their own captions, and with captions
    shuffled across scenes (next to the rate at which a shuffled caption is in fact true,
    computed from the scene metadata), plus the shape confusion matrix. ``noise`` adds
    Gaussian noise of that std (in the [-1, 1] image range) and ``blur`` a Gaussian blur of
    that sigma (px) before checking."""
    holdout = "default" if split.startswith("heldout") else None
    ds = ShapesDataset(split, seed=seed, length=n, holdout=holdout)
    scenes = [ds.scene(i) for i in range(n)]
    images = [render(o) for o, _, _ in scenes]
    if blur > 0:
        images = [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(blur))) for im in images]
    if noise > 0:
        g = np.random.default_rng(seed)
        images = [np.clip(im.astype(np.float32) + g.normal(0, noise * 127.5, im.shape), 0, 255)
                  .round().astype(np.uint8) for im in images]
    caps = [c for _, _, c in scenes]
    perm = np.random.default_rng(seed).permutation(n)
    shuf = [caps[j] for j in perm]
    keys = ("count", "colour", "shape", "relation", "correct")

    def agg(rs):
        out = {}
        for k in keys:
            vals = [r[k] for r in rs if r[k] is not None]
            out[k] = float(np.mean(vals)) if vals else float("nan")
        return out

    found = [detect(im) for im in images]
    gt = agg([check(None, c, f) for c, f in zip(caps, found)])
    sh = agg([check(None, c, f) for c, f in zip(shuf, found)])
    sh_true = agg([_truth(o, r, c) for (o, r, _), c in zip(scenes, shuf)])
    return {"ground_truth": gt, "shuffled": sh, "shuffled_truth": sh_true, "n": n,
            "confusion": confusion(images, scenes)}


def report_checker(n: int = 2000, seed: int = 1, split: str = "test", noise: float = 0.0, blur: float = 0.0) -> None:
    """Print the checker's accuracy on rendered ground truth and on shuffled captions, its
    confusion matrix and what it reads on near-miss shapes (`mmgen shapes-check`)."""
    r = evaluate_checker(n, seed, split=split, noise=noise, blur=blur)
    print(f"n={r['n']} split={split} noise={noise:g} blur={blur:g}")
    print(f"{'':>26s} " + " ".join(f"{k:>9s}" for k in r["ground_truth"]))
    for name in ("ground_truth", "shuffled", "shuffled_truth"):
        print(f"{name:>26s} " + " ".join(f"{v:9.4f}" for v in r[name].values()))
    print(format_confusion(r["confusion"]))
    print("\nnear misses (must be unknown or a named allowed shape):")
    for name, img, allowed in near_misses():
        got = [o["shape"] for o in detect(img)]
        ok = all(g in allowed for g in got)
        print(f"  {'ok ' if ok else 'BAD'} {name:40s} read as {got}")
