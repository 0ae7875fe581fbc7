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

The contrastive losses live in mmgen.losses, the text tower in mmgen.models.text_encoders,
the caption tokenizer and vocabulary pruning in mmgen.text.captions; this file holds the
config, the model and its presets.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import config_from_dict, config_to_dict, merge_overrides, rename_fields
from ..layers import Transformer, TransformerConfig
from ..losses import ClipLoss, SigLipLoss
from ..registry import get_family, get_preset, register_model, register_preset
from ..text.captions import CaptionTokenizer, build_tokenizer, check_vocabulary_resolved, resolve_vocabulary
from ._classify import AUGMENTS, augment_images
from .base import Model, eval_mode
from .text_encoders import CLIPTextConfig, TextTower

LOSSES = ("clip", "siglip")
LOCKS = ("none", "tower", "tower_proj")


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
    # Prune the clip_bpe vocabulary to the captions of a dataset (mmgen.text.caption_corpus:
    # "shapes", "emoji:train"; dataset kwargs in tokenizer_captions_kwargs) once, before the
    # model is built (create_model / CLIP.create); the result lands in tokenizer_state, so
    # checkpoints never rebuild the dataset.
    tokenizer_captions: str = ""
    tokenizer_captions_kwargs: dict = field(default_factory=dict)
    tokenizer_captions_extra: tuple[str, ...] = ()  # extra texts to keep tokens of (zero-shot templates)
    truncate: bool = False  # cut over-long captions with a warning instead of raising
    loss: str = "clip"  # clip (softmax InfoNCE) | siglip (sigmoid)
    label_aware: bool = False  # same-class captions are not negatives (class-template captions)
    # NegCLIP: batches carrying "negative_input_ids" (one caption per image with one binding
    # changed, e.g. shapes with negatives=True) add them as extra negatives of each image
    hard_negatives: bool = False
    # and batches carrying "negative_image" (one per caption, e.g. shapes with negative_images=True:
    # the scene with one object distorted) add them as extra negatives of each caption
    hard_negative_images: bool = False
    # CoCa (Yu et al., 2022): a captioning loss beside the contrastive one. A small causal
    # decoder reads the text tower's token states and cross-attends to the image tower's
    # tokens to predict each next caption token, so the image tower must carry what the words
    # say (which object is on top), which the contrastive loss alone may never ask for.
    caption_loss: float = 0.0  # its weight (CoCa: 2.0); 0 = no decoder
    caption_depth: int = 2  # blocks of the captioning decoder (text tower width and heads)
    augment: str = "none"  # training images: none | flip | crop | crop_flip (reflect-pad-4 translation, as ViT/Swin)
    local_loss: bool = False  # DDP: this rank's rows against the gathered columns
    gather_with_grad: bool = True  # DDP: differentiable all-gather (exact global gradient)
    logit_scale_init: float | None = None  # None: ln(1/0.07) for clip, ln(10) for siglip
    logit_scale_max: float = math.log(100.0)
    logit_bias_init: float = -10.0  # siglip only
    lock_image: str = "none"  # LiT: none | tower (freeze the image tower) | tower_proj (and its projection)
    # LiT: start the image tower from a checkpoint directory, a CLIP's (its image tower and
    # projection) or an image model's (e.g. a ViT classifier; the head is dropped). Read once,
    # by create_model / CLIP.create (load_sources); loading a saved CLIP takes its own weights.
    init_image_from: str = ""

    def __post_init__(self):
        for name, value, allowed in (("loss", self.loss, LOSSES), ("lock_image", self.lock_image, LOCKS),
                                     ("augment", self.augment, AUGMENTS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not (self.caption_loss >= 0 and math.isfinite(self.caption_loss)) or self.caption_depth < 1:
            raise ValueError(f"caption_loss must be a finite weight >= 0 and caption_depth >= 1, got "
                             f"{self.caption_loss} and {self.caption_depth}")
        if self.hard_negatives and self.loss != "clip":
            raise ValueError(f"hard_negatives needs loss='clip' (softmax over the captions), got loss={self.loss!r}")
        if self.hard_negative_images and self.loss != "clip":
            raise ValueError(f"hard_negative_images needs loss='clip' (softmax over the images), got loss={self.loss!r}")
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
    overrides = rename_fields(cls.config_class, vision)  # a config.json written before a field was renamed
    field_names = {f for f in cls.config_class.__dataclass_fields__}
    if "num_classes" in field_names:
        overrides.setdefault("num_classes", 0)
    return cls, config_from_dict(cls.config_class, merge_overrides(cls.config_class, base, overrides))


def _token_sequence(features: torch.Tensor) -> torch.Tensor:
    """An image tower's forward_features as a token sequence (B, S, C): a ViT's (B, S, C)
    as it is, a Swin's (B, H, W, C) flattened."""
    if features.ndim == 4:
        return features.flatten(1, 2)
    if features.ndim != 3:
        raise ValueError(f"captioning needs image tokens (B, S, C) or (B, H, W, C), got {tuple(features.shape)}")
    return features


class CaptionDecoder(nn.Module):
    """CoCa's multimodal decoder: causal blocks over the text tower's token states, each with
    cross-attention to the image tokens, and a head predicting the next caption token."""

    def __init__(self, text: CLIPTextConfig, image_dim: int, depth: int):
        super().__init__()
        self.transformer = Transformer(TransformerConfig(
            embed_dim=text.embed_dim, depth=depth, num_heads=text.num_heads, mlp=text.mlp, mlp_ratio=text.mlp_ratio,
            norm=text.norm, causal=True, cross_attn=True, context_dim=image_dim, final_norm=True))
        self.transformer.init_weights(std=0.02)
        self.head = nn.Linear(text.embed_dim, text.vocab_size, bias=False)
        nn.init.normal_(self.head.weight, std=0.02)

    def loss(self, states: torch.Tensor, image_tokens: torch.Tensor, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
        """states (B, T, width) of ids (B, T), image tokens (B, S, C) -> the mean cross-entropy
        of each next token (padding after EOS not predicted; the text tower is causal, so the
        state at t has seen tokens <= t only)."""
        h = self.transformer(states[:, :-1], context=image_tokens)  # (B, T-1, width)
        target = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)  # (B, T-1)
        return F.cross_entropy(self.head(h).flatten(0, 1).float(), target.flatten(), ignore_index=-100)


@register_model("clip")
class CLIP(Model):
    """Two towers and a temperature. forward(image, text) returns both embeddings (unit norm),
    the exponentiated logit scale (and bias for SigLIP) and the two logit matrices."""

    config_class = CLIPConfig

    @classmethod
    def resolve_config(cls, config: CLIPConfig, tokenizer=None) -> CLIPConfig:
        """The config with its tokenizer fixed (the given one, or clip_bpe pruned to
        `tokenizer_captions`: the dataset is read here, once), the text vocabulary and special
        ids taken from it, and the image tower's preset expanded to family + full config (so
        the checkpoint is self-contained). `config` is left as it was."""
        cfg = resolve_vocabulary(config, tokenizer)
        tok = build_tokenizer(cfg.tokenizer, cfg.tokenizer_state)
        t = cfg.text
        if t.vocab_size and t.vocab_size < tok.vocab_size:
            raise ValueError(f"text.vocab_size={t.vocab_size} is smaller than the tokenizer's {tok.vocab_size} "
                             f"({cfg.tokenizer}); set text.vocab_size=0 to take the tokenizer's")
        text = dataclasses.replace(t, vocab_size=t.vocab_size or tok.vocab_size,
                                   pad_id=tok.pad_id if t.pad_id < 0 else t.pad_id,
                                   eos_id=tok.eos_id if t.eos_id < 0 else t.eos_id)
        vcls, vcfg = resolve_vision(cfg.vision_model, cfg.vision)
        return dataclasses.replace(cfg, text=text, vision_model=vcls.model_type, vision=config_to_dict(vcfg))

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        check_vocabulary_resolved(config, "CLIP")
        cfg = self.config = self.resolve_config(config)  # a copy: derived values filled, no dataset read
        t = cfg.text
        self.tokenizer = self._caption_tokenizer(build_tokenizer(cfg.tokenizer, cfg.tokenizer_state))
        vcls = get_family(cfg.vision_model)
        self.visual = vcls(config_from_dict(vcls.config_class, cfg.vision))
        if not hasattr(self.visual, "forward_head") or not hasattr(self.visual, "num_features"):
            raise TypeError(f"image tower {vcls.__name__} needs forward_features / forward_head(x, pre_logits=True) "
                            f"/ num_features (the timm encoder API)")
        self.text = TextTower(t)
        if cfg.caption_loss and not t.causal:
            raise ValueError("caption_loss needs a causal text tower (text.causal=True): a bidirectional one lets "
                             "each token's state see the token it is asked to predict")
        self.captioner = CaptionDecoder(t, self.visual.num_features, cfg.caption_depth) if cfg.caption_loss else None
        self.image_proj = nn.Linear(self.visual.num_features, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(t.embed_dim, cfg.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=self.visual.num_features ** -0.5)
        nn.init.normal_(self.text_proj.weight, std=t.embed_dim ** -0.5)
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
        self.lock_image_tower(cfg.lock_image)

    def _caption_tokenizer(self, tok) -> CaptionTokenizer:
        return CaptionTokenizer(tok, self.config.text.context_length, truncate=self.config.truncate,
                                hint="for CLIP: model.tokenize(texts, truncate=True), or truncate=True in the "
                                     "config, cuts with a warning")

    def load_sources(self) -> None:
        """LiT: the image tower from `init_image_from` (a freshly built model only)."""
        if self.config.init_image_from:
            self.load_image_tower(self.config.init_image_from)

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
                             f"(CLIP.create(config, tokenizer=tok))")
        text = dataclasses.replace(self.config.text, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)
        self.config = dataclasses.replace(self.config, tokenizer=getattr(tokenizer, "name", self.config.tokenizer),
                                          tokenizer_state=tokenizer.to_dict(), text=text)  # a new config, none mutated
        self.text.cfg = text
        self.tokenizer = self._caption_tokenizer(tokenizer)

    def tokenize(self, texts: str | Sequence[str], *, truncate: bool | None = None) -> torch.Tensor:
        """Captions -> (N, context_length) LongTensor on the model's device."""
        return self.tokenizer(texts, truncate=truncate).to(self.logit_scale.device)

    def lock_image_tower(self, mode: str = "tower") -> None:
        """LiT: freeze the image tower ("tower") or the tower and its projection ("tower_proj")."""
        if mode not in LOCKS:
            raise ValueError(f"lock_image must be one of {LOCKS}, got {mode!r}")
        if self.config.lock_image != mode:
            self.config = dataclasses.replace(self.config, lock_image=mode)
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
        return self._embed_image(self.visual.forward_features(image), normalize)

    def encode_text(self, text: torch.Tensor | Sequence[str], normalize: bool = True) -> torch.Tensor:
        if isinstance(text, str) or (isinstance(text, (list, tuple)) and text and isinstance(text[0], str)):
            text = self.tokenize(text)
        return self._embed_text(*self.text.encode_states(text), normalize)

    def _embed_image(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The image tower's forward_features -> the joint embedding (B, embed_dim)."""
        x = self.image_proj(self.visual.forward_head(tokens, pre_logits=True))
        return F.normalize(x, dim=-1) if normalize else x

    def _embed_text(self, states: torch.Tensor, pool_index: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The text tower's token states (B, T, width) -> the joint embedding (B, embed_dim)."""
        x = self.text_proj(self.text.pool(states, pool_index))
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
        ids = self._text_of(batch)
        tokens, (states, pool_index) = self.visual.forward_features(image), self.text.encode_states(ids)
        img, txt = self._embed_image(tokens), self._embed_text(states, pool_index)  # (B, embed_dim) each
        negatives = None
        if self.config.hard_negatives:
            if "negative_input_ids" not in batch:
                raise ValueError("hard_negatives=True needs 'negative_input_ids' in the batch: a dataset whose items "
                                 "carry 'negative_caption' (e.g. shapes with negatives=True)")
            negatives = self.encode_text(batch["negative_input_ids"].to(image.device))
        negative_images = None
        if self.config.hard_negative_images and (self.training or "negative_image" in batch):
            if "negative_image" not in batch:  # evaluation splits may have none (a bank of train samples)
                raise ValueError("hard_negative_images=True needs 'negative_image' in the batch: a dataset whose items "
                                 "carry one (e.g. shapes with negative_images=True)")
            negative_images = self.encode_image(batch["negative_image"].to(image.device))
        scale = self.logit_scale.exp()
        # The global batch (all-gather across ranks) only in training: evaluation may run on
        # one rank alone (the train loop evaluates on rank 0), where a collective would hang.
        loss = self.loss_fn(img, txt, scale, self.logit_bias, labels if self.config.label_aware else None,
                            distributed=self.training,
                            **({} if negatives is None else {"negative_text_features": negatives}),
                            **({} if negative_images is None else {"negative_image_features": negative_images}))
        contrastive = loss
        if self.captioner is not None:  # the same token states feed the captioning decoder
            caption = self.captioner.loss(states, _token_sequence(tokens), ids, self.config.text.pad_id)
            loss = contrastive + self.config.caption_loss * caption
        with torch.no_grad():
            sims = img @ txt.T
            diag = torch.arange(len(img), device=img.device)
            logs = {"loss": float(loss), "logit_scale": float(scale),
                    **({} if self.captioner is None else {"contrastive_loss": float(contrastive),
                                                          "caption_loss": float(caption)}),
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


def image_input(clip) -> tuple[int | None, int | None]:
    """(image size, channels) a CLIP's image tower expects, when it says."""
    visual = getattr(clip, "visual", None)
    cfg = getattr(visual, "config", None) or getattr(visual, "cfg", None)
    size = getattr(cfg, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return size, getattr(cfg, "in_chans", None)


def fit_to_image_tower(clip, images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as the CLIP's image tower takes them: grey <-> RGB by the channel
    mean, resized bilinearly to its size (each when the tower says what it takes)."""
    size, chans = image_input(clip)
    x = images.float()
    if chans is not None and x.shape[1] != chans:
        x = x.mean(1, keepdim=True).expand(-1, chans, -1, -1)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


class CLIPEnsemble(nn.Module):
    """Several CLIPs scoring as one reranker. An image's (or a text's) embedding is the
    members' unit embeddings concatenated and divided by sqrt(M), so the cosine similarity of
    an image and a text is the mean of the M members' cosines: every consumer of
    encode_image / encode_text (CLIP score, reranking) gets the mean score unchanged.
    Differently trained CLIPs make different mistakes, so their mean picks an all-correct
    sample more often than any one of them (docs/dalle.md). Texts are tokenized by each
    member; prompt checks read the first member's vocabulary (`tokenizer`, `config`)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two CLIPs, got {len(members)}")
        for i, m in enumerate(members):
            if not (hasattr(m, "encode_image") and hasattr(m, "encode_text") and hasattr(m, "tokenize")):
                raise TypeError(f"ensemble member {i} is a {type(m).__name__}, not a CLIP model (encode_image, "
                                f"encode_text, tokenize)")
        self.members = nn.ModuleList(members)

    @property
    def tokenizer(self):
        return self.members[0].tokenizer

    @property
    def config(self):
        return self.members[0].config

    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, sum of the members' embed_dim), unit norm (normalize is accepted for the CLIP API)."""
        parts = [F.normalize(m.encode_image(fit_to_image_tower(m, image)).float(), dim=-1) for m in self.members]
        return torch.cat(parts, -1) / math.sqrt(len(parts))

    def encode_text(self, text: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Captions (strings: each member tokenizes them its own way, cut to its context)."""
        if isinstance(text, str):
            text = [text]
        if not (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
            raise TypeError(f"CLIPEnsemble.encode_text takes captions (strings), got {type(text).__name__}: its "
                            f"members tokenize differently")
        from ..text.captions import quiet
        parts = [F.normalize(m.encode_text(quiet(m.tokenize, list(text), truncate=True)).float(), dim=-1)
                 for m in self.members]
        return torch.cat(parts, -1) / math.sqrt(len(parts))


# --------------------------------------------------------------------------- presets

register_preset("clip_tiny", CLIP, "ViT-tiny image tower, 3-layer 128-wide causal text tower, byte tokenizer",
                vision_model="vit_tiny_patch4_32", embed_dim=128, tokenizer="byte",
                text=dict(context_length=48, embed_dim=128, depth=3, num_heads=4))
register_preset("clip_tiny_siglip", CLIP, "clip_tiny with the sigmoid loss",
                vision_model="vit_tiny_patch4_32", embed_dim=128, tokenizer="byte", loss="siglip",
                text=dict(context_length=48, embed_dim=128, depth=3, num_heads=4))
