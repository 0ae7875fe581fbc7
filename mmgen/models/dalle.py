r"""DALL-E (Ramesh et al. 2021), small: one causal transformer over the sequence
[text tokens; image tokens], the image tokens coming from a frozen VQ-VAE / dVAE.

    from mmgen.pipelines import load_pipeline
    pipe = load_pipeline("dalle_shapes")  # the model + its VQ (../vq_shapes) + CLIP reranker (../clip_shapes)
    out = pipe(["a red circle above a blue square"], num_images=4, candidates=8)

This file holds the model (config, modules, `loss`, presets); sampling, reranking, prompt
checks and loading the companion models live in `mmgen.pipelines.dalle`.

Sequence layout (positions 0 .. context_length + h*w - 1):

    [BOS t_1 .. t_k EOS PAD .. PAD] [i_(0,0) i_(0,1) .. i_(h-1,w-1)]
     \______ context_length positions __/  \___ h*w image tokens, raster order ___/

* The text half is the GPT decoder's: a byte-level (or any mmgen.text) tokenizer, learned
  absolute positions, padded to a fixed `context_length` so every row has the same layout (the
  image always starts at position context_length; padding is attended to, as in DALL-E, and its
  learned position embedding makes each pad slot distinct).
* Text and image have their own embeddings and output heads: the hidden state at position p
  predicts token p+1 with the text head while p+1 < context_length, with the image head after.
* Image tokens get learned row + column embeddings (no 1-D position table).
* The loss is the weighted mean (text_loss_weight * CE_text + image_loss_weight * CE_image)
  / (sum of the weights), 1:7 by default (DALL-E's weighting); padding targets are ignored.
* Classifier-free guidance: in training the caption of each row is replaced, with
  probability cond_drop, by the null condition (the empty caption [BOS EOS PAD ..]); its text
  loss is skipped. The pipeline samples with null + s * (cond - null) on the next-token logits.

The VQ tokenizer and the CLIP reranker are not stored in this checkpoint: config fields
`vq_path` / `clip_path` name their checkpoint directories (written relative to this
checkpoint's directory by `save_pretrained`, e.g. "../vq_shapes"). Training needs the VQ
(`collate` encodes images with it); `attach(vq=...)` sets it in code.

The words of the training captions are recorded (`caption_words`, model state that is not
weights: `get_extra_state`, saved in the checkpoint's extra_state.json), so every checkpoint
knows its own vocabulary and the pipeline warns about other words. Checkpoints written before
kept a hashed bitmap of those words in the weights (`seen_words`); it loads as
`legacy_word_buckets` and answers the same way.
"""
from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import FactorisedEmbedding, FactorisedHead, KVCache, LearnedPositions, Transformer, TransformerConfig
from ..data.collate import ImageTokenMemo
from ..registry import register_model, register_preset
from ..text.captions import CaptionTokenizer, build_tokenizer, check_vocabulary_resolved, resolve_vocabulary
from ._classify import AUGMENTS, augment_images
from .base import Model, eval_mode

IMAGE_TOKENIZERS = ("vq", "palette")  # model types that tokenize images for a DALL-E (vq_path)
WORD_BUCKETS = 1 << 16  # the hashed bitmap of caption words in checkpoints of older versions
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def prompt_words(text: str) -> list[str]:
    """Lower-cased words (runs of letters/digits; CJK runs count as one word)."""
    return _WORD_RE.findall(text.lower())


def word_bucket(word: str) -> int:
    return zlib.crc32(word.encode("utf-8")) % WORD_BUCKETS


def _read_legacy_seen_words(module, state_dict, prefix, *args) -> None:
    """Load hook: an older checkpoint's `seen_words` bitmap (bool, WORD_BUCKETS) leaves the
    weights and becomes the set of its marked buckets."""
    bitmap = state_dict.pop(prefix + "seen_words", None)
    if bitmap is not None:
        buckets = sorted(bitmap.nonzero().flatten().tolist())
        module.legacy_word_buckets = set(buckets)
        # a state dict from before the words left the weights (e.g. an older run's
        # train_state.pt) has no extra state: give it one, so a strict load (--resume) accepts it
        state_dict.setdefault(prefix + "_extra_state", {"caption_words": [], "legacy_word_buckets": buckets})


@dataclass
class DALLEConfig:
    tokenizer: str = "byte"  # mmgen.text.get_tokenizer name: byte | clip_bpe
    tokenizer_state: dict | None = None  # the tokenizer's to_dict() (a pruned vocabulary), filled by create_model
    # prune clip_bpe to the words of these captions (mmgen.text.caption_corpus: a dataset name,
    # "name:split" or "module:function"), once, before the model is built
    tokenizer_captions: str = ""
    tokenizer_captions_kwargs: dict = field(default_factory=dict)  # dataset options
    tokenizer_captions_extra: tuple[str, ...] = ()  # extra texts to keep tokens of
    text_vocab: int = 0  # 0: the tokenizer's vocabulary size
    context_length: int = 48  # text positions, BOS / EOS / padding included
    image_vocab: int = 512  # codebook size of the VQ tokenizer
    image_grid: tuple[int, int] = (8, 8)  # (h, w) image tokens
    # a factorised tokenizer's code sizes, e.g. (64, 6) for the palette tokenizer's (silhouette,
    # colour): image ids are embedded as the sum of one table per code and predicted by one
    # head per code (mmgen.layers.FactorisedEmbedding / FactorisedHead); () = one table, one head
    image_factors: tuple[int, ...] = ()
    block: TransformerConfig = field(default_factory=lambda: TransformerConfig(causal=True))
    text_loss_weight: float = 1.0
    image_loss_weight: float = 7.0  # DALL-E: image tokens weigh 7x the text tokens
    cond_drop: float = 0.15  # probability of training a row on the null caption (for guidance)
    # attribute dropout: with probability attr_drop a training caption has each of its attribute
    # words (single-token words such as colours and shapes) replaced by the unknown token at a
    # rate drawn uniformly from [0, 1]. The model then also learns "a <unk> circle" (any colour)
    # and "a red <unk>" (any shape): the experts that compositional sampling multiplies to draw a
    # colour-shape pair never seen together (mmgen.pipelines.dalle, compose=...)
    attr_words: tuple[str, ...] = ()
    attr_drop: float = 0.0
    # read "A below B" as "B above A" (right of -> left of) in training and sampling: the object
    # named first is then the upper / left one, the one the raster order draws first
    # (mmgen.data.shapes.canonical_caption)
    canonical_relations: bool = False
    # words the model never reads: removed from every caption before tokenizing (training and
    # sampling), e.g. the colour names for a layout model that draws silhouettes only (layout_path)
    ignore_words: tuple[str, ...] = ()
    embed_dropout: float = 0.0
    # training images before the VQ: random translation by up to augment_pad pixels ("crop")
    # and / or horizontal flip ("flip", "crop_flip"); a small set then yields many token grids
    augment: str = "none"
    augment_pad: int = 2
    init_std: float = 0.02
    # a DALL-E checkpoint that draws each image token's first code (e.g. the palette tokenizer's
    # silhouette) from the prompt first; this model then samples only the remaining codes, given
    # those (mmgen.pipelines.dalle.sample_image_tokens, first_codes=...). Needs image_factors, and
    # the layout model's image_vocab and image_grid must be image_factors[0] and this image_grid
    layout_path: str = ""
    # two-stage sampling: paint every object of the outline one colour, the one its first token
    # in raster order gets (the tokenizer's object_regions; the palette tokenizer's objects are
    # flat-coloured). Without it the colour stage, which cannot see the outline below the
    # current row, sometimes paints the far side of an object in a neighbour's colour.
    one_colour_per_object: bool = False
    vq_path: str = ""  # VQ checkpoint dir (mmgen.checkpoint.resolve_companion: relative to this checkpoint's dir)
    clip_path: str = ""  # CLIP checkpoint dir for reranking ("" = no reranking)
    # more CLIP checkpoint dirs: the reranker is then all of them together, scoring an image by
    # the mean of their cosine similarities (mmgen.models.clip.CLIPEnsemble)
    extra_clip_paths: tuple[str, ...] = ()
    train_data: str = ""  # the dataset the model was trained on, named in prompt errors
    # sampling defaults of the pipeline (a shipped checkpoint carries the values it was measured with)
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    compose: float = 0.0  # weight of the attribute experts (needs attr_words; see sample_image_tokens)

    def __post_init__(self):
        if isinstance(self.block, dict):
            self.block = TransformerConfig(**self.block)
        self.image_grid = tuple(int(v) for v in self.image_grid)
        if len(self.image_grid) != 2 or min(self.image_grid) < 1:
            raise ValueError(f"image_grid must be (h, w) with h, w >= 1, got {self.image_grid}")
        if self.context_length < 3:
            raise ValueError(f"context_length must hold BOS, one token and EOS (>= 3), got {self.context_length}")
        if self.image_vocab < 2:
            raise ValueError(f"image_vocab must be >= 2, got {self.image_vocab}")
        self.image_factors = tuple(int(f) for f in self.image_factors)
        if self.image_factors and math.prod(self.image_factors) != self.image_vocab:
            raise ValueError(f"image_factors {list(self.image_factors)} multiply to "
                             f"{math.prod(self.image_factors)}, image_vocab is {self.image_vocab}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        self.attr_words = tuple(self.attr_words)
        self.ignore_words = tuple(w.lower() for w in self.ignore_words)
        if any(not re.fullmatch(r"\w+", w) for w in self.ignore_words):
            raise ValueError(f"ignore_words must be single words (letters / digits), got {list(self.ignore_words)}")
        if self.layout_path and len(self.image_factors) < 2:
            raise ValueError(f"layout_path={self.layout_path!r} draws each image token's first code, and this DALL-E's "
                             f"image ids are not factorised: set image_factors")
        if not isinstance(self.one_colour_per_object, bool):
            raise ValueError(f"one_colour_per_object must be true or false, got {self.one_colour_per_object!r}")
        if self.one_colour_per_object and len(self.image_factors) < 2:
            raise ValueError("one_colour_per_object paints the objects of given first codes (two-stage sampling), "
                             "and this DALL-E's image ids are not factorised: set image_factors")
        self.extra_clip_paths = tuple(self.extra_clip_paths)
        if self.extra_clip_paths and not self.clip_path:
            raise ValueError(f"extra_clip_paths {list(self.extra_clip_paths)} join the reranker at clip_path, and "
                             f"clip_path is empty: set clip_path to the first of them")
        if not 0.0 <= self.attr_drop <= 1.0 or (self.attr_drop > 0 and not self.attr_words):
            raise ValueError(f"attr_drop must be in [0, 1] and needs attr_words, got {self.attr_drop}, "
                             f"{self.attr_words}")
        if not 0.0 <= self.compose <= 1.0 or (self.compose > 0 and not self.attr_words):
            raise ValueError(f"compose (the sampling default) must be in [0, 1] and needs attr_words, got "
                             f"{self.compose}, {self.attr_words}")
        if self.augment not in AUGMENTS or self.augment_pad < 0:
            raise ValueError(f"augment must be one of {AUGMENTS} and augment_pad >= 0, got {self.augment!r}, "
                             f"{self.augment_pad}")
        if self.text_loss_weight < 0 or self.image_loss_weight <= 0:
            raise ValueError(f"need text_loss_weight >= 0 and image_loss_weight > 0, got "
                             f"{self.text_loss_weight}, {self.image_loss_weight}")
        if self.block.cross_attn or self.block.adaln != "none" or self.block.rope == "2d":
            raise ValueError("DALL-E's blocks take no cross-attention, adaLN or 2d RoPE: the text conditions "
                             "the image through the one causal sequence")
        if self.block.window is not None:
            raise ValueError("DALL-E attends over the whole sequence: set block.window=None")
        # the stack is causal by construction; positions are the learned tables below
        import dataclasses
        self.block = dataclasses.replace(self.block, causal=True, rope="none")

    @property
    def image_tokens(self) -> int:
        return self.image_grid[0] * self.image_grid[1]

    @property
    def seq_len(self) -> int:
        return self.context_length + self.image_tokens


@register_model("dalle")
class DALLE(Model):
    """Text-to-image transformer over [text; image tokens]. See the module docstring."""

    config_class = DALLEConfig
    companion_fields = ("vq_path", "clip_path", "extra_clip_paths", "layout_path")

    @classmethod
    def resolve_config(cls, config: DALLEConfig) -> DALLEConfig:
        """The config with its tokenizer fixed (clip_bpe pruned to `tokenizer_captions`: the
        captions are read here, once) and text_vocab taken from it. `config` is left as it was."""
        c = resolve_vocabulary(config)
        tok = build_tokenizer(c.tokenizer, c.tokenizer_state)
        if c.text_vocab and c.text_vocab < tok.vocab_size:
            raise ValueError(f"text_vocab={c.text_vocab} is smaller than the {c.tokenizer!r} tokenizer's "
                             f"{tok.vocab_size}; set text_vocab=0 to take the tokenizer's")
        return dataclasses.replace(c, text_vocab=c.text_vocab or tok.vocab_size)

    def __init__(self, config: DALLEConfig):
        super().__init__(config)
        check_vocabulary_resolved(config, "DALLE")
        c = self.config = self.resolve_config(config)  # a copy: text_vocab filled, no dataset read
        self.tokenizer = build_tokenizer(c.tokenizer, c.tokenizer_state)
        self._tokenize = CaptionTokenizer(self.tokenizer, c.context_length, warn_unknown=False,
                                          hint="DALL-E: truncate=True (--truncate) cuts it with a warning")
        d = c.block.embed_dim
        h, w = c.image_grid
        self.text_embed = nn.Embedding(c.text_vocab, d)
        self.text_pos = LearnedPositions(c.context_length, d, std=c.init_std)
        if c.image_factors:
            self.image_embed = FactorisedEmbedding(c.image_factors, d)
        else:
            self.image_embed = nn.Embedding(c.image_vocab, d)
        self.row_embed = nn.Parameter(torch.randn(h, d) * c.init_std)
        self.col_embed = nn.Parameter(torch.randn(w, d) * c.init_std)
        self.drop = nn.Dropout(c.embed_dropout)
        self.transformer = Transformer(c.block)
        self.text_head = nn.Linear(d, c.text_vocab, bias=False)
        self.image_head = FactorisedHead(d, c.image_factors) if c.image_factors else \
            nn.Linear(d, c.image_vocab, bias=False)
        # training-caption vocabulary: the words (extra state, not weights) and text token ids seen by loss()
        self.caption_words: set[str] = set()
        self.legacy_word_buckets: set[int] = set()  # an older checkpoint's hashed `seen_words` bitmap
        self.register_buffer("seen_text", torch.zeros(c.text_vocab, dtype=torch.bool))
        self._register_load_state_dict_pre_hook(_read_legacy_seen_words, with_module=True)
        self.transformer.init_weights(std=c.init_std, residual_scale=True)
        for part in (self.text_embed, self.image_embed, self.text_head, self.image_head):
            for m in part.modules():  # a factorised embedding / head holds one table per code
                if isinstance(m, (nn.Embedding, nn.Linear)):
                    nn.init.normal_(m.weight, std=c.init_std)
        self._vq = None  # the frozen VQ, not part of this checkpoint's weights
        self._layout = None  # the frozen layout DALL-E (layout_path), not part of them either
        self._attr_seqs = self._attribute_sequences(c.attr_words)
        # an ignored word with the spaces before it (so "a red circle" reads "a circle")
        self._ignored_re = re.compile(r"\s*\b(?:" + "|".join(map(re.escape, c.ignore_words)) + r")\b",
                                      re.IGNORECASE) if c.ignore_words else None
        self._null_row: torch.Tensor | None = None  # the empty caption's ids, (1, context_length)
        self.token_memo = ImageTokenMemo()  # the VQ's tokens of the training images seen so far

    # ------------------------------------------------------------------ the VQ tokenizer (training)
    def attach(self, vq=None, layout=None) -> "DALLE":
        """Use this VQ tokenizer and / or this layout DALL-E (see config layout_path), both kept
        frozen, outside this model's state dict."""
        if layout is not None:
            c, lc = self.config, getattr(layout, "config", None)
            if not isinstance(layout, DALLE) or len(c.image_factors) < 2:
                raise ValueError("a layout must be a DALL-E, for a DALL-E with factorised image ids (image_factors)")
            if lc.image_vocab != c.image_factors[0] or lc.image_grid != c.image_grid or lc.layout_path:
                raise ValueError(f"the layout DALL-E draws {lc.image_grid} grids of {lc.image_vocab} ids"
                                 f"{' and has a layout of its own' if lc.layout_path else ''}; this DALL-E needs "
                                 f"{c.image_grid} grids of its first code's {c.image_factors[0]} ids, and no layout")
            object.__setattr__(self, "_layout", layout.eval().requires_grad_(False))  # not a submodule
        if vq is not None:
            if getattr(vq, "vocab_size", None) != self.config.image_vocab:
                raise ValueError(f"the VQ tokenizer has vocab_size={getattr(vq, 'vocab_size', None)}, this DALL-E "
                                 f"expects {self.config.image_vocab}")
            factors = tuple(getattr(vq, "factors", ()))
            if self.config.image_factors and factors != self.config.image_factors:
                raise ValueError(f"this DALL-E predicts image ids factorised as {list(self.config.image_factors)}, "
                                 f"the tokenizer's codes factor as {list(factors) or 'one codebook'}")
            if tuple(vq.token_shape) != self.config.image_grid:
                raise ValueError(f"the VQ tokenizer makes {tuple(vq.token_shape)} token grids, this DALL-E "
                                 f"expects {self.config.image_grid}")
            if vq is not self._vq:
                self.token_memo.clear()  # tokens of another VQ
            object.__setattr__(self, "_vq", vq.eval().requires_grad_(False))  # not a submodule
        return self

    @property
    def layout(self) -> "DALLE | None":
        """The DALL-E that draws the first code of each image token (config layout_path), loaded
        on first use; None without one."""
        if self._layout is None and self.config.layout_path:
            from ..checkpoint import load_companion
            layout = load_companion(self.config.layout_path, self._ckpt_dir, "layout", expect="dalle", owner="DALL-E")
            self.attach(layout=layout.to(self.device))
        return self._layout

    @property
    def vq(self):
        """The frozen image tokenizer, loaded from `vq_path` on first use."""
        if self._vq is None:
            if not self.config.vq_path:
                raise ValueError("this DALL-E has no VQ tokenizer: set config vq_path or call attach(vq=...)")
            from ..checkpoint import load_companion
            vq = load_companion(self.config.vq_path, self._ckpt_dir, "vq", expect=IMAGE_TOKENIZERS, owner="DALL-E")
            self.attach(vq=vq.to(self.device))
        return self._vq

    # ------------------------------------------------------------------ text
    def null_text(self, batch: int = 1) -> torch.Tensor:
        """The null condition: the empty caption [BOS EOS PAD ..], (batch, context_length)
        (tokenised once; every training step with condition dropout asks for it)."""
        return self._null_ids().repeat(batch, 1)

    def _null_ids(self) -> torch.Tensor:
        """The empty caption's ids (1, context_length) on the model's device, cached."""
        dev = self.text_embed.weight.device
        if self._null_row is None or self._null_row.device != dev:
            self._null_row = self._tokenize([""]).to(dev)
        return self._null_row

    def tokenize(self, texts: str | Sequence[str], *, truncate: bool = False) -> torch.Tensor:
        """Captions -> (N, context_length) ids [BOS text EOS PAD ..]. Over-long text raises a
        ValueError naming both lengths; truncate=True cuts it (EOS kept last) with a warning."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if self.config.canonical_relations:
            from ..data.shapes import canonical_caption
            texts = [canonical_caption(t) for t in texts]
        if self.config.ignore_words:
            texts = [self._ignored_re.sub("", t) if isinstance(t, str) else t for t in texts]
        return self._tokenize(texts, truncate=truncate).to(self.text_embed.weight.device)

    def _attribute_sequences(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids of each attribute word (a word may be several tokens), longest first."""
        unk = getattr(self.tokenizer, "unk_id", None)
        if words and unk is None:
            raise ValueError("attr_words need a tokenizer with an unknown token to stand for a dropped word")
        seqs = []
        for word in words:
            ids = self.tokenizer.encode(word)
            if not ids or unk in ids:
                raise ValueError(f"attr_words: {word!r} is not in the {self.config.tokenizer!r} tokenizer's "
                                 f"vocabulary (ids {ids})")
            seqs.append(ids)
        return sorted(seqs, key=len, reverse=True)

    def attribute_spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """[start, end) token positions of the attribute words in one row of ids, in order."""
        spans, i = [], 0
        while i < len(ids):
            for seq in self._attr_seqs:
                if list(ids[i:i + len(seq)]) == seq:
                    spans.append((i, i + len(seq)))
                    i += len(seq)
                    break
            else:
                i += 1
        return spans

    def drop_attributes(self, text: torch.Tensor, keep) -> torch.Tensor:
        """text (N, context_length) ids with attribute words dropped: keep(n, k) -> k bools, whether
        row n keeps each of its k attribute words. A dropped word becomes one <unk> whatever its
        token count (so the text does not tell which word it was); the row is re-padded."""
        pad, unk, L = self.tokenizer.pad_id, self.tokenizer.unk_id, text.shape[1]
        rows = []
        for n, ids in enumerate(text.tolist()):
            spans = self.attribute_spans(ids)
            flags = keep(n, len(spans)) if spans else []
            out, i = [], 0
            for (a, b), kept in zip(spans, flags):
                out += ids[i:a] + (ids[a:b] if kept else [unk])
                i = b
            out += ids[i:]
            out = [t for t in out if t != pad]
            rows.append(out + [pad] * (L - len(out)))
        return torch.tensor(rows, dtype=text.dtype, device=text.device)

    @torch.no_grad()
    def record_captions(self, captions: Sequence[str], text: torch.Tensor | None = None) -> None:
        """Mark the words (and token ids) of training captions as seen."""
        self.caption_words.update(w for c in captions for w in prompt_words(c))
        if text is not None:
            self.seen_text[text.flatten().to(self.seen_text.device)] = True

    def has_caption_vocabulary(self) -> bool:
        """Whether training captions were recorded (an untrained model has none)."""
        return bool(self.caption_words or self.legacy_word_buckets)

    def saw_word(self, word: str) -> bool:
        """Was this (lower-cased) word in a training caption?"""
        return word in self.caption_words or word_bucket(word) in self.legacy_word_buckets

    def get_extra_state(self) -> dict:
        """The recorded caption words: state dicts carry them (training copies, resume), and
        save_pretrained writes them to extra_state.json, not to the weights."""
        state = {"caption_words": sorted(self.caption_words)}
        if self.legacy_word_buckets:
            state["legacy_word_buckets"] = sorted(self.legacy_word_buckets)
        return state

    def set_extra_state(self, state: dict) -> None:
        self.caption_words = set(state.get("caption_words", ()))
        self.legacy_word_buckets = set(state.get("legacy_word_buckets", ()))

    # ------------------------------------------------------------------ forward
    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Tokens of the joint sequence at positions [start, start + T) -> (B, T, dim). Text ids
        at positions < context_length, image ids (codebook indices) after."""
        c = self.config
        B, T = tokens.shape
        if start + T > c.seq_len:
            raise ValueError(f"positions {start}..{start + T - 1} run past the sequence of {c.seq_len} "
                             f"(context_length {c.context_length} + {c.image_tokens} image tokens)")
        n_text = max(0, min(T, c.context_length - start))  # how many of these positions are text
        parts = []
        if n_text:
            t = tokens[:, :n_text]
            if int(t.max()) >= c.text_vocab or int(t.min()) < 0:
                raise ValueError(f"text ids must be in [0, {c.text_vocab}), got [{int(t.min())}, {int(t.max())}]")
            parts.append(self.text_pos(self.text_embed(t), start=start))
        if n_text < T:
            im = tokens[:, n_text:]
            if int(im.max()) >= c.image_vocab or int(im.min()) < 0:
                raise ValueError(f"image ids must be in [0, {c.image_vocab}), got [{int(im.min())}, {int(im.max())}]")
            i0 = start + n_text - c.context_length  # index of the first image token here
            idx = torch.arange(i0, i0 + (T - n_text), device=tokens.device)
            w = c.image_grid[1]
            pos = self.row_embed[idx // w] + self.col_embed[idx % w]  # (Ti, dim)
            parts.append(self.image_embed(im) + pos)
        return self.drop(torch.cat(parts, 1) if len(parts) > 1 else parts[0])

    def forward(self, tokens: torch.Tensor, *, start: int = 0, cache: list[KVCache] | None = None,
                return_hidden: bool = False):
        """tokens (B, T) of the joint sequence at positions [start, start + T) -> (text_logits
        (B, Tt, text_vocab) or None, image_logits (B, Ti, image_vocab) or None): the hidden
        state at position p predicts token p + 1, with the text head while p + 1 < context_length
        (the first Tt positions) and the image head after (the last Ti)."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, seq), got shape {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point:
            raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
        h = self.transformer(self.embed(tokens, start), cache=cache, start=start)  # (B, T, dim)
        T = tokens.shape[1]
        n_text = max(0, min(T, self.config.context_length - 1 - start))  # positions predicting text
        text_logits = self.text_head(h[:, :n_text]) if n_text else None
        image_logits = self.image_head(h[:, n_text:]) if n_text < T else None
        return (text_logits, image_logits, h) if return_hidden else (text_logits, image_logits)

    def make_cache(self, batch: int, max_len: int | None = None, *, dtype=None, device=None) -> list[KVCache]:
        return self.transformer.make_cache(batch, max_len or self.config.seq_len, dtype=dtype,
                                           device=device or self.text_embed.weight.device)

    # ------------------------------------------------------------------ training contract
    def collate(self, items: list[dict]) -> dict[str, Any]:
        """Dataset items {"image", "caption", ...} -> {"text" (B, context_length), "image_tokens"
        (B, h, w), "caption"}: captions tokenised (over-long ones cut with a warning), images
        encoded by the frozen VQ under no_grad."""
        if not items:
            raise ValueError("collate got an empty list of items")
        missing = {"image", "caption"} - set(items[0])
        if missing:
            raise ValueError(f"DALL-E batches need 'image' and 'caption' items, missing {sorted(missing)}")
        captions = [it["caption"] for it in items]
        images = torch.stack([torch.as_tensor(it["image"], dtype=torch.float32) for it in items])
        if self.training and self.config.augment != "none":
            images = augment_images(images, self.config.augment, pad=self.config.augment_pad)
        tokens = self.token_memo.encode(self.vq, images)  # the frozen VQ, once per distinct image
        return {"text": self.tokenize(captions, truncate=True).cpu(), "image_tokens": tokens, "caption": captions}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch {"text" (B, context_length) ids, "image_tokens" (B, h, w) or (B, h*w) codebook ids}
        (or {"image", "caption"}: tokenised and VQ-encoded here). Returns the 1:7 weighted mean
        of the text and image cross-entropies (nats per token)."""
        c = self.config
        if "text" not in batch or "image_tokens" not in batch:
            if "image" in batch and "caption" in batch:
                images = batch["image"]
                batch = self.collate([{"image": images[i], "caption": batch["caption"][i]}
                                      for i in range(len(images))])
            else:
                raise ValueError(f"DALL-E loss needs 'text' + 'image_tokens' (or 'image' + 'caption'), "
                                 f"got keys {sorted(batch)}")
        dev = self.text_embed.weight.device
        text = batch["text"].to(dev)
        image = batch["image_tokens"].to(dev).reshape(text.shape[0], -1)  # (B, h*w) raster order
        if text.shape[1] != c.context_length or image.shape[1] != c.image_tokens:
            raise ValueError(f"expected text (B, {c.context_length}) and image tokens (B, {c.image_tokens}), got "
                             f"{tuple(text.shape)} and {tuple(image.shape)}")
        B = text.shape[0]
        keep = torch.ones(B, dtype=torch.bool, device=dev)
        if self.training:
            if "caption" in batch:
                self.record_captions(batch["caption"], text)
            if c.attr_drop > 0:  # per row: dropped or not, then each attribute word at a uniform rate
                rates = (torch.rand(B) * (torch.rand(B) < c.attr_drop)).tolist()
                text = self.drop_attributes(text, lambda n, k: (torch.rand(k) >= rates[n]).tolist())
            if c.cond_drop > 0:
                keep = torch.rand(B, device=dev) >= c.cond_drop
                text = torch.where(keep[:, None], text, self._null_ids())  # (B, context_length)
        seq = torch.cat([text, image], 1)  # (B, context_length + h*w)
        text_logits, image_logits = self(seq[:, :-1])
        # text targets: positions 1 .. context_length-1, padding and dropped captions ignored
        t_tgt = seq[:, 1:c.context_length].masked_fill(seq[:, 1:c.context_length] == self.tokenizer.pad_id, -100)
        t_tgt = t_tgt.masked_fill(~keep[:, None], -100)
        loss_text = F.cross_entropy(text_logits.flatten(0, 1).float(), t_tgt.flatten(), ignore_index=-100)
        if not bool((t_tgt != -100).any()):
            loss_text = text_logits.sum() * 0.0  # every caption dropped: no text target this batch
        loss_image = F.cross_entropy(image_logits.flatten(0, 1).float(), image.flatten())
        wt, wi = c.text_loss_weight, c.image_loss_weight
        loss = (wt * loss_text + wi * loss_image) / (wt + wi)
        return loss, {"loss": loss.item(), "loss_text": loss_text.item(), "loss_image": loss_image.item()}

    def example_batch(self, batch_size: int = 2, device="cpu") -> dict:
        c = self.config
        g = torch.Generator().manual_seed(0)
        words = ["a red circle", "a blue square", "green", "a star"]
        captions = [words[i % len(words)] for i in range(batch_size)]
        image = torch.randint(0, c.image_vocab, (batch_size, *c.image_grid), generator=g)
        return {"text": self.tokenize(captions, truncate=True).to(device), "image_tokens": image.to(device),
                "caption": captions}

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """Validation cross-entropies with the real captions (no condition dropout)."""
        with eval_mode(self):
            _, logs = self.loss(batch)
        return logs  # the loop files them under val/



# ------------------------------------------------------------------------------ presets
def _block(**kw) -> dict:
    return dict(causal=True, **kw)


register_preset("dalle_tiny", DALLE, "2-layer 64-wide DALL-E over 16 text + 4x4 image tokens from 32 codes; tests",
                context_length=16, image_vocab=32, image_grid=(4, 4), block=_block(embed_dim=64, depth=2, num_heads=4))
register_preset("dalle_small_32", DALLE,
                "4-layer 256-wide DALL-E: 48 byte-level text positions + 8x8 tokens of a 512-code VQ (vq_32)",
                context_length=48, image_vocab=512, image_grid=(8, 8), block=_block(embed_dim=256, depth=4, num_heads=8))
register_preset("dalle_shapes_32", DALLE,
                "4-layer 128-wide DALL-E for the shapes captions: a clip_bpe vocabulary pruned to the shapes "
                "grammar (12 text positions) + 8x8 tokens of a 512-code VQ (vq_32)",
                tokenizer="clip_bpe", tokenizer_captions="shapes", context_length=12, image_vocab=512, image_grid=(8, 8),
                train_data="shapes", block=_block(embed_dim=128, depth=4, num_heads=4))
register_preset("dalle_emoji_32", DALLE,
                "4-layer 128-wide DALL-E for emoji names: clip_bpe pruned to the emoji train captions "
                "(24 text positions) + 8x8 tokens of a 512-code VQ (vq_32)",
                tokenizer="clip_bpe", tokenizer_captions="emoji", context_length=24, image_vocab=512, image_grid=(8, 8),
                train_data="emoji", block=_block(embed_dim=128, depth=4, num_heads=4))
