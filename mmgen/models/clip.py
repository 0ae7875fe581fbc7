"""CLIP: an image tower (our ViT or Swin, any preset) and a causal text transformer built
from the shared blocks, each projected to a joint embedding space and trained with a
contrastive loss (open_clip's ClipLoss, or SigLIP's sigmoid loss), with a learnable
temperature.

    model = mmgen.create_model("clip_tiny")
    tokens = model.tokenize(["a red circle", "a blue square"])  # (2, context) LongTensor
    img = model.encode_image(images)  # (B, embed_dim), unit norm
    txt = model.encode_text(tokens)   # (2, embed_dim), unit norm
    probs = (model.logit_scale.exp() * img @ txt.T).softmax(-1)

The checkpoint is self-contained: the image tower's family and full config, the text
tower's config and the tokenizer (a pruned BPE vocabulary included) are all in config.json,
so `mmgen.load_pretrained(dir).tokenize([...])` works on its own.

Order of this file (timm's): losses, text tower, model, presets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import config_from_dict, config_to_dict, merge_overrides
from ..layers import LearnedPositions, Transformer, TransformerConfig
from ..layers.mlp import MLPS
from ..layers.norm import NORMS
from ..registry import get_family, get_preset, register_model, register_preset
from ._classify import AUGMENTS, augment_images
from .base import Model, eval_mode

LOSSES = ("clip", "siglip")
POOLS = ("eos", "argmax", "last")
LOCKS = ("none", "tower", "tower_proj")
TEXT_POS = ("learned", "rope")


# --------------------------------------------------------------------------- losses

def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else torch.distributed's when initialised, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate a (B, ...) tensor from every rank along dim 0 (equal B everywhere). The
    backward sums every rank's gradient of the gathered tensor and hands each rank its own
    slice (what torch.distributed.nn.all_gather does; that one is deprecated)."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(gathered)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    return _AllGatherWithGrad.apply(x)


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor, *, local_loss: bool,
                    gather_with_grad: bool, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather both feature sets across ranks, as open_clip does. With gather_with_grad the
    gather is differentiable (its backward sums the gradients of every rank into the local
    slice); otherwise the gathered copies carry no gradient and, unless local_loss, the local
    slice is swapped back in so that this rank's own features still get one."""
    import torch.distributed as dist
    if gather_with_grad:
        return all_gather_with_grad(image_features), all_gather_with_grad(text_features)
    imgs = [torch.zeros_like(image_features) for _ in range(world_size)]
    txts = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(imgs, image_features.detach())
    dist.all_gather(txts, text_features.detach())
    if not local_loss:
        imgs[rank], txts[rank] = image_features, text_features
    return torch.cat(imgs, dim=0), torch.cat(txts, dim=0)


def gather_labels(labels: torch.Tensor, world_size: int) -> torch.Tensor:
    import torch.distributed as dist
    out = [torch.zeros_like(labels) for _ in range(world_size)]
    dist.all_gather(out, labels)
    return torch.cat(out, dim=0)


def _check_features(image_features, text_features, labels):
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(f"contrastive loss wants image and text features of the same shape (batch, dim), "
                         f"got {tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if labels is not None and labels.shape != image_features.shape[:1]:
        raise ValueError(f"labels must be ({image_features.shape[0]},), got {tuple(labels.shape)}")


def _same_label_mask(row_labels: torch.Tensor, col_labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(R, C) True where column j has the row's label but is not its own pair: a caption of
    the same class, which label-aware losses do not count as a negative."""
    same = row_labels[:, None] == col_labels[None, :]
    same[torch.arange(len(targets), device=targets.device), targets] = False
    return same


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the (global) batch: cross-entropy of image->text and
    text->image logits against the diagonal, averaged (open_clip's ClipLoss).

    Under torch.distributed (rank/world_size taken from the process group at call time):
    local_loss=True computes only this rank's rows against all columns (memory O(B_local x
    B_global)); gather_with_grad=True back-propagates through the all-gather. With both on,
    DDP's gradient average equals the single-process gradient on the global batch.
    label_aware=True takes `labels` (B,) and drops captions of the same class from each
    row's negatives (for class-template captions, where "a photo of a cat" pairs with
    every cat image)."""

    def __init__(self, *, local_loss: bool = False, gather_with_grad: bool = False, label_aware: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.local_loss, self.gather_with_grad, self.label_aware = local_loss, gather_with_grad, label_aware
        self.rank, self.world_size = rank, world_size

    def get_logits(self, image_features, text_features, logit_scale, logit_bias=None, labels=None,
                   distributed: bool = True):
        """(logits_per_image, logits_per_text, targets), label-aware masking applied."""
        rank, world = dist_info(self.rank, self.world_size) if distributed else (0, 1)
        B = image_features.shape[0]
        all_labels = labels
        if world > 1:
            all_img, all_txt = gather_features(image_features, text_features, local_loss=self.local_loss,
                                               gather_with_grad=self.gather_with_grad, rank=rank,
                                               world_size=world)
            if labels is not None:
                all_labels = gather_labels(labels, world)
            if self.local_loss:
                logits_per_image = logit_scale * image_features @ all_txt.T  # (B, W*B)
                logits_per_text = logit_scale * text_features @ all_img.T  # (B, W*B)
                targets = torch.arange(B, device=image_features.device) + B * rank
                row_labels = labels
            else:
                logits_per_image = logit_scale * all_img @ all_txt.T  # (W*B, W*B)
                logits_per_text = logits_per_image.T
                targets = torch.arange(all_img.shape[0], device=image_features.device)
                row_labels = all_labels
        else:
            logits_per_image = logit_scale * image_features @ text_features.T  # (B, B)
            logits_per_text = logit_scale * text_features @ image_features.T
            targets = torch.arange(B, device=image_features.device)
            row_labels = labels
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        if self.label_aware:
            if labels is None:
                raise ValueError("label_aware ClipLoss needs labels (batch,)")
            drop = _same_label_mask(row_labels, all_labels, targets)
            logits_per_image = logits_per_image.masked_fill(drop, float("-inf"))
            logits_per_text = logits_per_text.masked_fill(drop, float("-inf"))
        return logits_per_image, logits_per_text, targets

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, labels=None, *,
                distributed: bool = True) -> torch.Tensor:
        """distributed=False: this process's batch alone, even inside a process group (for
        evaluation on one rank, where a collective would wait forever for the others)."""
        _check_features(image_features, text_features, labels)
        li, lt, targets = self.get_logits(image_features, text_features, logit_scale, logit_bias, labels, distributed)
        return (F.cross_entropy(li, targets) + F.cross_entropy(lt, targets)) / 2


class SigLipLoss(nn.Module):
    """Sigmoid loss (Zhai et al., 2023): every image-text pair is a binary problem, +1 on the
    diagonal and -1 elsewhere, summed and divided by the local batch (open_clip's SigLipLoss).

    Under torch.distributed the text features of every rank are gathered with gradient
    (open_clip's "gather" exchange) and this rank's images see them as negatives. Each rank
    divides its rows by the local batch, so the mean of the rank losses (and DDP's averaged
    gradient) equals the single-process loss on the global batch.
    label_aware=True leaves out same-class pairs (neither positive nor negative)."""

    def __init__(self, *, label_aware: bool = False, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.label_aware, self.rank, self.world_size = label_aware, rank, world_size

    def _block(self, image_features, text_features, logit_scale, logit_bias, positive: bool, drop=None):
        logits = logit_scale * image_features @ text_features.T  # (B, B')
        if logit_bias is not None:
            logits = logits + logit_bias
        sign = -torch.ones_like(logits)
        if positive:
            sign = sign + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)
        terms = F.logsigmoid(sign * logits)
        if drop is not None:
            terms = terms.masked_fill(drop, 0.0)
        return -terms.sum() / image_features.shape[0]

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, labels=None, *,
                distributed: bool = True) -> torch.Tensor:
        _check_features(image_features, text_features, labels)
        if self.label_aware and labels is None:
            raise ValueError("label_aware SigLipLoss needs labels (batch,)")
        rank, world = dist_info(self.rank, self.world_size) if distributed else (0, 1)
        B = image_features.shape[0]
        diag = torch.arange(B, device=image_features.device)
        drop = _same_label_mask(labels, labels, diag) if self.label_aware else None
        loss = self._block(image_features, text_features, logit_scale, logit_bias, True, drop)
        if world > 1:
            all_txt = all_gather_with_grad(text_features).chunk(world)  # W x (B, D)
            all_lab = gather_labels(labels, world) if self.label_aware else None
            for r in range(world):
                if r == rank:
                    continue
                d = (labels[:, None] == all_lab[r * B:(r + 1) * B][None, :]) if self.label_aware else None
                loss = loss + self._block(image_features, all_txt[r], logit_scale, logit_bias, False, d)
        return loss


# --------------------------------------------------------------------------- tokenizer adapter

class CLIPTokenize:
    """Callable turning captions into a (N, context_length) LongTensor: BOS, the tokens, EOS,
    then padding (mmgen.data's `tokenize_captions`). The shape open_clip's
    `build_zero_shot_classifier` expects of a tokenizer.

    Text that does not fit raises a ValueError naming the caption and both lengths; with
    truncate=True it is cut (keeping EOS last) with a warning instead. Never a silent cut."""

    def __init__(self, tokenizer, context_length: int, *, truncate: bool = False):
        self.tokenizer, self.context_length, self.truncate = tokenizer, context_length, truncate
        self._warned_unk = False  # say it once: a training loop would repeat it every batch

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None, *,
                 truncate: bool | None = None) -> torch.Tensor:
        from ..data.collate import tokenize_captions
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenize takes str or a list of str, got {[type(t).__name__ for t in texts][:4]}")
        cut = self.truncate if truncate is None else truncate
        try:
            ids = tokenize_captions(texts, self.tokenizer, context_length or self.context_length,
                                    on_overflow="truncate" if cut else "error")["input_ids"]
        except ValueError as e:
            raise ValueError(f"{e} (for CLIP: model.tokenize(texts, truncate=True), or truncate=True in the "
                             f"config, cuts with a warning)") from None
        unk = getattr(self.tokenizer, "unk_id", None)
        if unk is not None and unk != self.tokenizer.pad_id:
            rows = (ids == unk).any(-1).nonzero().flatten().tolist()
            if rows and not self._warned_unk:  # a pruned vocabulary reads unseen words as <unk>: say so
                self._warned_unk = True
                warnings.warn(f"{len(rows)} of {len(texts)} texts hold words outside this model's pruned "
                              f"vocabulary, read as <unk>: e.g. {texts[rows[0]]!r} (said once per model)",
                              stacklevel=2)
        return ids

    def unreadable(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) True for rows of `ids` (from this tokenizer) with no token but <unk> and the
        special ones: text the model cannot read at all (e.g. only unseen words)."""
        unk = getattr(self.tokenizer, "unk_id", None)
        known = torch.ones_like(ids, dtype=torch.bool)
        for i in {self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id, unk} - {None}:
            known &= ids != i
        return ~known.any(-1)


def dataset_captions(ds) -> list[str]:
    """Every caption of a dataset: its `captions` (attribute or method) if it has one, else
    each item's "caption"."""
    caps = getattr(ds, "captions", None)
    if caps is not None:
        return list(caps() if callable(caps) else caps)
    return [ds[i]["caption"] for i in range(len(ds))]


def pruned_tokenizer(source: str, extra: Sequence[str] = (), **data_kwargs):
    """open_clip's BPE pruned to the captions of dataset `source` ("name" or "name:split")
    plus `extra` texts."""
    from ..data import build_dataset
    from ..text import get_tokenizer
    name, _, split = source.partition(":")
    captions = dataset_captions(build_dataset(name, split=split or "train", **data_kwargs)) + list(extra)
    return get_tokenizer("clip_bpe").pruned(captions)


def build_tokenizer(name: str, state: dict | None = None):
    """`mmgen.text.get_tokenizer(name)`, or the saved (e.g. pruned) one rebuilt from `state`
    (its `to_dict()`)."""
    from ..text import get_tokenizer
    from ..text.tokenizers import tokenizer_from_dict
    return tokenizer_from_dict(state) if state else get_tokenizer(name)


# --------------------------------------------------------------------------- text tower

@dataclass
class CLIPTextConfig:
    vocab_size: int = 0  # 0: the tokenizer's vocabulary size, filled in when the model is built
    context_length: int = 32  # tokens, BOS and EOS included
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp: str = "gelu"
    mlp_ratio: float = 4.0
    norm: str = "layernorm"
    pos: str = "learned"  # learned | rope
    causal: bool = True  # CLIP's text tower is causal; False = bidirectional with a padding mask
    pool: str = "eos"  # eos (first EOS token) | argmax (open_clip: highest id) | last
    dropout: float = 0.0
    pad_id: int = -1  # -1: from the tokenizer
    eos_id: int = -1

    def __post_init__(self):
        for name, value, allowed in (("pool", self.pool, POOLS), ("mlp", self.mlp, MLPS),
                                     ("norm", self.norm, NORMS), ("pos", self.pos, TEXT_POS)):
            if value not in allowed:
                raise ValueError(f"text.{name} must be one of {allowed}, got {value!r}")
        if self.context_length < 3:
            raise ValueError(f"text.context_length must hold BOS, a token and EOS (>= 3), got {self.context_length}")
        if not self.causal and self.pool == "last":
            raise ValueError("text.pool='last' reads padding in a bidirectional tower: use pool='eos'")


class TextTower(nn.Module):
    """Token embedding + positions -> causal Transformer (shared blocks, final norm) -> the
    hidden state at the EOS token (CLIP's EOT pooling). Output (B, width)."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = LearnedPositions(cfg.context_length, cfg.width, std=0.01) if cfg.pos == "learned" else None
        self.transformer = Transformer(TransformerConfig(
            dim=cfg.width, depth=cfg.depth, num_heads=cfg.heads, mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio,
            norm=cfg.norm, causal=cfg.causal, rope="1d" if cfg.pos == "rope" else "none",
            dropout=cfg.dropout, final_norm=True))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer.init_weights(std=0.02)

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) position of the token whose hidden state represents the text."""
        cfg = self.cfg
        if cfg.pool == "argmax":
            return tokens.argmax(dim=-1)
        if cfg.pool == "last":
            return torch.full(tokens.shape[:1], tokens.shape[1] - 1, device=tokens.device, dtype=torch.long)
        is_eos = tokens == cfg.eos_id
        if not bool(is_eos.any(-1).all()):
            bad = (~is_eos.any(-1)).nonzero().flatten().tolist()
            raise ValueError(f"text rows {bad[:8]} have no EOS token (id {cfg.eos_id}); tokenize with "
                             f"model.tokenize(), which adds BOS/EOS")
        return is_eos.int().argmax(dim=-1)  # first EOS

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"text tokens must be a (batch, seq) LongTensor, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > cfg.context_length:
            raise ValueError(f"text of {tokens.shape[1]} tokens exceeds the context of {cfg.context_length}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]: was this text tokenized with this model's tokenizer?")
        x = self.token_embedding(tokens)  # (B, T, width)
        if self.pos is not None:
            x = self.pos(x)
        key_padding = None if cfg.causal else tokens != cfg.pad_id  # causal: padding sits after EOS
        x = self.transformer(x, key_padding=key_padding)
        return x[torch.arange(x.shape[0], device=x.device), self.pool_index(tokens)]  # (B, width)


# --------------------------------------------------------------------------- the model

@dataclass
class CLIPConfig:
    # Image tower: a registered family ("vit", "swin") with its full config in `vision`, or a
    # preset name ("vit_tiny_patch4_32") with overrides in `vision`; presets are resolved at
    # construction and the checkpoint stores the family and the full config.
    vision_model: str = "vit_tiny_patch4_32"
    vision: dict = field(default_factory=dict)
    text: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    embed_dim: int = 128
    tokenizer: str = "byte"  # mmgen.text.get_tokenizer name: byte | clip_bpe
    tokenizer_state: dict | None = None  # the tokenizer's to_dict() (a pruned vocabulary), set from `tokenizer=`
    # Prune the clip_bpe vocabulary to the captions of a dataset when the model is first built
    # ("shapes", "emoji:train"; kwargs in tokenizer_prune_kwargs); the result lands in
    # tokenizer_state, so checkpoints never rebuild the dataset.
    tokenizer_prune_from: str = ""
    tokenizer_prune_kwargs: dict = field(default_factory=dict)
    tokenizer_prune_extra: tuple[str, ...] = ()  # extra texts to keep tokens of (zero-shot templates)
    truncate: bool = False  # cut over-long captions with a warning instead of raising
    loss: str = "clip"  # clip (softmax InfoNCE) | siglip (sigmoid)
    label_aware: bool = False  # same-class captions are not negatives (class-template captions)
    augment: str = "none"  # training images: none | flip | crop | crop_flip (reflect-pad-4 translation, as ViT/Swin)
    local_loss: bool = False  # DDP: this rank's rows against the gathered columns
    gather_with_grad: bool = True  # DDP: differentiable all-gather (exact global gradient)
    logit_scale_init: float | None = None  # None: ln(1/0.07) for clip, ln(10) for siglip
    logit_scale_max: float = math.log(100.0)
    logit_bias_init: float = -10.0  # siglip only
    lock_image: str = "none"  # LiT: none | tower (freeze the image tower) | tower_proj (and its projection)
    # LiT: start the image tower from a checkpoint directory, a CLIP's (its image tower and
    # projection) or an image model's (e.g. a ViT classifier; the head is dropped). Read once
    # when the model is first built; loading a saved CLIP takes its own weights instead.
    init_image_from: str = ""

    def __post_init__(self):
        for name, value, allowed in (("loss", self.loss, LOSSES), ("lock_image", self.lock_image, LOCKS),
                                     ("augment", self.augment, AUGMENTS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not isinstance(self.vision, dict):
            raise TypeError(f"vision must be a dict of the image tower's config, got {type(self.vision).__name__}")


def resolve_vision(vision_model: str, vision: dict) -> tuple[type, Any]:
    """(family class, full config) of the image tower. A preset name is expanded; the
    classifier head is dropped (num_classes=0) since CLIP projects the pooled features."""
    from ..registry import _FAMILIES, _load_all
    _load_all()
    if vision_model in _FAMILIES:
        cls, base = get_family(vision_model), {}
    else:
        try:
            preset = get_preset(vision_model)
        except ValueError:
            raise ValueError(f"vision_model {vision_model!r} is neither a model family ({', '.join(sorted(_FAMILIES))}) "
                             f"nor a registered preset") from None
        cls, base = preset.model_cls, preset.config
    overrides = dict(vision)
    field_names = {f for f in cls.config_class.__dataclass_fields__}
    if "num_classes" in field_names:
        overrides.setdefault("num_classes", 0)
    return cls, config_from_dict(cls.config_class, merge_overrides(cls.config_class, base, overrides))


@register_model("clip")
class CLIP(Model):
    """Two towers and a temperature. forward(image, text) returns both embeddings (unit norm),
    the exponentiated logit scale (and bias for SigLIP) and the two logit matrices."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig, *, tokenizer=None):
        super().__init__(config)
        import copy
        cfg = self.config = copy.deepcopy(config)
        # Tokenizer first: it fixes the text vocabulary and the special ids.
        if tokenizer is None and cfg.tokenizer_prune_from and not cfg.tokenizer_state:
            if cfg.tokenizer != "clip_bpe":
                raise ValueError(f"tokenizer_prune_from prunes the clip_bpe vocabulary; tokenizer is {cfg.tokenizer!r}")
            tokenizer = pruned_tokenizer(cfg.tokenizer_prune_from, cfg.tokenizer_prune_extra,
                                         **cfg.tokenizer_prune_kwargs)
        tok = tokenizer if tokenizer is not None else build_tokenizer(cfg.tokenizer, cfg.tokenizer_state)
        if tokenizer is not None:
            cfg.tokenizer, cfg.tokenizer_state = getattr(tokenizer, "name", cfg.tokenizer), tokenizer.to_dict()
        t = cfg.text
        if t.vocab_size == 0:
            t.vocab_size = tok.vocab_size
        elif t.vocab_size < tok.vocab_size:
            raise ValueError(f"text.vocab_size={t.vocab_size} is smaller than the tokenizer's {tok.vocab_size} "
                             f"({cfg.tokenizer}); set text.vocab_size=0 to take the tokenizer's")
        t.pad_id = tok.pad_id if t.pad_id < 0 else t.pad_id
        t.eos_id = tok.eos_id if t.eos_id < 0 else t.eos_id
        self.tokenizer = CLIPTokenize(tok, t.context_length, truncate=cfg.truncate)

        vcls, vcfg = resolve_vision(cfg.vision_model, cfg.vision)
        cfg.vision_model, cfg.vision = vcls.model_type, config_to_dict(vcfg)  # self-contained checkpoint
        self.visual = vcls(vcfg)
        if not hasattr(self.visual, "forward_head") or not hasattr(self.visual, "num_features"):
            raise TypeError(f"image tower {vcls.__name__} needs forward_features / forward_head(x, pre_logits=True) "
                            f"/ num_features (the timm encoder API)")
        self.text = TextTower(t)
        self.image_proj = nn.Linear(self.visual.num_features, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(t.width, cfg.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=self.visual.num_features ** -0.5)
        nn.init.normal_(self.text_proj.weight, std=t.width ** -0.5)
        scale_init = cfg.logit_scale_init
        if scale_init is None:
            scale_init = math.log(1 / 0.07) if cfg.loss == "clip" else math.log(10.0)
        self.logit_scale = nn.Parameter(torch.tensor(float(scale_init)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.logit_bias_init))) if cfg.loss == "siglip" else None
        if cfg.loss == "clip":
            self.loss_fn = ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad,
                                    label_aware=cfg.label_aware)
        else:
            self.loss_fn = SigLipLoss(label_aware=cfg.label_aware)
        if cfg.init_image_from and not CLIP._loading_checkpoint:
            self.load_image_tower(cfg.init_image_from)
        self.lock_image_tower(cfg.lock_image)

    _loading_checkpoint = False  # set by from_pretrained: the checkpoint's weights replace init_image_from's

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        prev, CLIP._loading_checkpoint = CLIP._loading_checkpoint, True
        try:
            return super().from_pretrained(path, **kwargs)
        finally:
            CLIP._loading_checkpoint = prev

    def load_image_tower(self, path: str) -> None:
        """Copy image-tower weights from a checkpoint directory: a CLIP (visual.* and
        image_proj.*) or an image model of the same family and config (its classifier head,
        if any, is left out)."""
        from pathlib import Path

        from safetensors.torch import load_file

        from ..checkpoint import WEIGHTS_NAME, read_config
        meta = read_config(path)
        sd = load_file(str(Path(path) / WEIGHTS_NAME))
        if meta["model_type"] == "clip":
            vis = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
            proj = {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")}
        else:
            if meta["model_type"] != self.config.vision_model:
                raise ValueError(f"{path!r} holds a {meta['model_type']!r} model; this CLIP's image tower is "
                                 f"{self.config.vision_model!r}")
            vis, proj = sd, {}
        own = self.visual.state_dict()
        vis = {k: v for k, v in vis.items() if k in own}  # drops a classifier head
        missing = [k for k in own if k not in vis]
        bad = [k for k in vis if vis[k].shape != own[k].shape]
        if missing or bad:
            raise ValueError(f"image tower weights in {path!r} do not fit this CLIP's {self.config.vision_model} "
                             f"(missing {missing[:5]}, shape mismatch {bad[:5]}): build it with the same vision config")
        self.visual.load_state_dict(vis)
        if proj and proj["weight"].shape == self.image_proj.weight.shape:
            self.image_proj.load_state_dict(proj)

    # ---- the tokenizer travels with the model
    def set_tokenizer(self, tokenizer) -> None:
        """Swap in a tokenizer (e.g. a pruned vocabulary) before training; it is stored in the
        config so that checkpoints rebuild it. Its vocabulary must fit the embedding table."""
        if tokenizer.vocab_size > self.config.text.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the text embedding "
                             f"{self.config.text.vocab_size}: build the model with this tokenizer instead "
                             f"(CLIP(config, tokenizer=tok))")
        self.config.tokenizer, self.config.tokenizer_state = getattr(tokenizer, "name", self.config.tokenizer), tokenizer.to_dict()
        self.config.text.pad_id, self.config.text.eos_id = tokenizer.pad_id, tokenizer.eos_id
        self.text.cfg.pad_id, self.text.cfg.eos_id = tokenizer.pad_id, tokenizer.eos_id
        self.tokenizer = CLIPTokenize(tokenizer, self.config.text.context_length, truncate=self.config.truncate)

    def tokenize(self, texts: str | Sequence[str], *, truncate: bool | None = None) -> torch.Tensor:
        """Captions -> (N, context_length) LongTensor on the model's device."""
        return self.tokenizer(texts, truncate=truncate).to(self.logit_scale.device)

    def lock_image_tower(self, mode: str = "tower") -> None:
        """LiT: freeze the image tower ("tower") or the tower and its projection ("tower_proj")."""
        if mode not in LOCKS:
            raise ValueError(f"lock_image must be one of {LOCKS}, got {mode!r}")
        self.config.lock_image = mode
        for p in self.visual.parameters():
            p.requires_grad_(mode == "none")
        for p in self.image_proj.parameters():
            p.requires_grad_(mode != "tower_proj")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.lock_image != "none":
            self.visual.eval()  # a locked tower keeps eval-mode dropout / drop-path
        return self

    # ---- encoders
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled features (B, num_features), before the projection."""
        return self.visual.forward_head(self.visual.forward_features(image), pre_logits=True)

    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.image_proj(self.image_features(image))  # (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text: torch.Tensor | Sequence[str], normalize: bool = True) -> torch.Tensor:
        if isinstance(text, str) or (isinstance(text, (list, tuple)) and text and isinstance(text[0], str)):
            text = self.tokenize(text)
        x = self.text_proj(self.text(text))  # (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        img, txt = self.encode_image(image), self.encode_text(text)
        scale = self.logit_scale.exp()
        logits = scale * img @ txt.T  # (B_img, B_txt)
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return {"image_features": img, "text_features": txt, "logit_scale": scale, "logit_bias": self.logit_bias,
                "logits_per_image": logits, "logits_per_text": logits.T}

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, texts: torch.Tensor | Sequence[str]) -> torch.Tensor:
        """(N_img, N_txt) cosine similarities, e.g. to rerank generated images for a prompt."""
        return self.encode_image(images.to(self.logit_scale.device)) @ self.encode_text(texts).T

    @torch.no_grad()
    def score(self, images: torch.Tensor, texts: torch.Tensor | Sequence[str]) -> torch.Tensor:
        """(N,) cosine similarity of each image with its own text (CLIPScore is 100 * max(s, 0))."""
        img = self.encode_image(images.to(self.logit_scale.device))
        txt = self.encode_text(texts)
        if img.shape[0] != txt.shape[0]:
            raise ValueError(f"score pairs images with texts: got {img.shape[0]} images and {txt.shape[0]} texts")
        return (img * txt).sum(-1)

    # ---- training contract
    @torch.no_grad()
    def post_step(self) -> None:
        """Clamp the temperature to [0, ln 100] (open_clip does it after every optimizer step)."""
        self.logit_scale.clamp_(0, self.config.logit_scale_max)

    def collate(self, items: list[dict]) -> dict[str, Any]:
        """Dataset items {"image", "label", "caption"} -> {"image" (B,C,H,W), "label" (B,),
        "caption" list, "input_ids" (B, context), "attention_mask", "eot_index"}
        (mmgen.data's CaptionCollate with this model's tokenizer)."""
        from ..data.collate import CaptionCollate
        if items and "image" not in items[0]:
            raise ValueError(f"CLIP batches need 'image' and 'caption' items, got keys {sorted(items[0])}")
        return CaptionCollate(self.tokenizer.tokenizer, self.config.text.context_length,
                              on_overflow="truncate" if self.config.truncate else "error")(items)

    def _text_of(self, batch: dict) -> torch.Tensor:
        for key in ("input_ids", "text"):
            if key in batch:
                return batch[key].to(self.logit_scale.device)
        if "caption" in batch:
            return self.tokenize(batch["caption"])
        raise ValueError(f"CLIP batch needs 'input_ids' tokens or 'caption' strings, got keys {sorted(batch)}")

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        self.post_step()  # safety: the clamp holds even if the loop has no post-step hook
        image = batch["image"].to(self.logit_scale.device)
        if self.training and self.config.augment != "none":
            image = augment_images(image, self.config.augment)
        labels = batch.get("label")
        if self.config.label_aware and labels is None:
            raise ValueError("label_aware=True needs 'label' in the batch")
        if labels is not None:
            labels = torch.as_tensor(labels, device=image.device)
        img, txt = self.encode_image(image), self.encode_text(self._text_of(batch))
        scale = self.logit_scale.exp()
        # The global batch (all-gather across ranks) only in training: evaluation may run on
        # one rank alone (the train loop evaluates on rank 0), where a collective would hang.
        loss = self.loss_fn(img, txt, scale, self.logit_bias, labels if self.config.label_aware else None,
                            distributed=self.training)
        with torch.no_grad():
            sims = img @ txt.T
            diag = torch.arange(len(img), device=img.device)
            logs = {"loss": float(loss), "logit_scale": float(scale),
                    "i2t_acc": float((sims.argmax(1) == diag).float().mean()),
                    "t2i_acc": float((sims.argmax(0) == diag).float().mean())}
        return loss, logs

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """In-batch retrieval R@1 both ways (equal captions count as hits) and the loss."""
        from ..metrics.clip_eval import retrieval_metrics
        with eval_mode(self):
            loss, logs = self.loss(batch)
            img = self.encode_image(batch["image"].to(self.logit_scale.device))
            txt = self.encode_text(self._text_of(batch))
            captions = batch.get("caption")
            m = retrieval_metrics(img, txt, captions=captions, ks=(1,))
        return {"val_loss": logs["loss"], **{f"val_{k}": v for k, v in m.items()}}

    def example_batch(self, batch_size: int = 2, device: str | torch.device = "cpu") -> dict[str, Any]:
        vc = self.visual.config
        size = getattr(vc, "img_size", 32)
        size = (size, size) if isinstance(size, int) else tuple(size)
        chans = getattr(vc, "in_chans", 3)
        g = torch.Generator().manual_seed(0)
        image = torch.rand(batch_size, chans, *size, generator=g) * 2 - 1
        words = ["red", "blue", "green", "circle", "square", "left", "right", "a", "cat", "dog"]
        captions = [" ".join(words[(i * 3 + j) % len(words)] for j in range(3)) + f" {i}" for i in range(batch_size)]
        batch = self.collate([{"image": image[i], "label": i % 3, "caption": captions[i]} for i in range(batch_size)])
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------- presets

register_preset("clip_tiny", CLIP, "ViT-tiny image tower, 3-layer 128-wide causal text tower, byte tokenizer",
                vision_model="vit_tiny_patch4_32", embed_dim=128, tokenizer="byte",
                text=dict(context_length=48, width=128, depth=3, heads=4))
register_preset("clip_tiny_siglip", CLIP, "clip_tiny with the sigmoid loss",
                vision_model="vit_tiny_patch4_32", embed_dim=128, tokenizer="byte", loss="siglip",
                text=dict(context_length=48, width=128, depth=3, heads=4))
