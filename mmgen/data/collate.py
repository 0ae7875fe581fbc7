"""Tokenising collate functions for captioned image data, shared by CLIP, DDPM and DALL-E.

``tokenize_captions(texts, tokenizer, context_length)`` returns

* ``input_ids``      (B, T) long: ``[bos] caption [eos] pad pad ...``
* ``attention_mask`` (B, T) bool: True on real tokens (bos..eos), False on padding
* ``eot_index``      (B,)   long: position of the eos token (CLIP pools the text tower there)

``T`` is ``context_length`` (fixed shapes, the default) or the longest sequence in the batch
(``pad_to="longest"``).

Over-long captions are never cut silently. ``on_overflow="error"`` (the default) raises a
``ValueError`` naming the caption, its token count and the context length;
``on_overflow="truncate"`` keeps the first ``context_length - 1`` tokens, puts eos last
(as open_clip does) and emits a ``UserWarning`` saying how many captions were cut.

``CaptionCollate(tokenizer, context_length)`` turns a list of dataset items
``{"image", "label", "caption"}`` into a batch ``{"image": (B,C,H,W), "label": (B,),
"caption": [str], "input_ids", "attention_mask", "eot_index"}``.

``ImageTokenMemo(max_entries)`` memoises a frozen image tokenizer (a VQ's ``encode_tokens``)
for collate functions that turn images into tokens (DALL-E's).
"""
from __future__ import annotations

import hashlib
import warnings
from typing import Sequence

import torch

OVERFLOW_MODES = ("error", "truncate")


def tokenize_captions(texts: Sequence[str], tokenizer, context_length: int, *,
                      add_bos: bool = True, add_eos: bool = True, on_overflow: str = "error",
                      pad_to: str = "context") -> dict:
    """Tokenise a batch of captions to padded ids + attention mask (see module docstring)."""
    if isinstance(texts, str):
        texts = [texts]
    if on_overflow not in OVERFLOW_MODES:
        raise ValueError(f"on_overflow must be one of {OVERFLOW_MODES}, got {on_overflow!r}")
    if pad_to not in ("context", "longest"):
        raise ValueError(f"pad_to must be 'context' or 'longest', got {pad_to!r}")
    if context_length < 1 + int(add_bos) + int(add_eos):
        raise ValueError(f"context_length={context_length} leaves no room for text "
                         f"(add_bos={add_bos}, add_eos={add_eos})")
    seqs, n_cut = [], 0
    for text in texts:
        ids = tokenizer.encode(text, add_bos=add_bos, add_eos=add_eos)
        if len(ids) > context_length:
            if on_overflow == "error":
                raise ValueError(
                    f"caption {text[:60]!r}{'...' if len(text) > 60 else ''} is {len(ids)} tokens "
                    f"(with bos/eos) but context_length is {context_length}; use a larger "
                    f"context_length or on_overflow='truncate'")
            ids = ids[:context_length]
            if add_eos:
                ids[-1] = tokenizer.eos_id
            n_cut += 1
        seqs.append(ids)
    if n_cut:
        warnings.warn(f"tokenize_captions: truncated {n_cut} of {len(seqs)} captions to "
                      f"context_length={context_length}", UserWarning, stacklevel=2)
    T = context_length if pad_to == "context" else max(len(s) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, T), tokenizer.pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((B, T), dtype=torch.bool)  # (B, T)
    eot = torch.zeros(B, dtype=torch.long)  # (B,)
    for i, s in enumerate(seqs):
        input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = True
        eot[i] = len(s) - 1
    return {"input_ids": input_ids, "attention_mask": mask, "eot_index": eot}


class CaptionCollate:
    """Collate ``{"image", "label", "caption"}`` items and tokenise their captions (and, when
    the items carry one, their ``"negative_caption"`` into ``negative_input_ids`` etc., and
    their ``"negative_image"`` into ``negative_image``).

    Picklable (a plain class), so it works with ``DataLoader(num_workers>0)``.
    """

    def __init__(self, tokenizer, context_length: int = 77, *, add_bos: bool = True,
                 add_eos: bool = True, on_overflow: str = "error", pad_to: str = "context"):
        if isinstance(tokenizer, str):
            from mmgen.text import get_tokenizer

            tokenizer = get_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.kw = dict(add_bos=add_bos, add_eos=add_eos, on_overflow=on_overflow, pad_to=pad_to)
        if on_overflow not in OVERFLOW_MODES:
            raise ValueError(f"on_overflow must be one of {OVERFLOW_MODES}, got {on_overflow!r}")

    def __call__(self, items: Sequence[dict]) -> dict:
        if not items:
            raise ValueError("CaptionCollate got an empty list of items")
        batch: dict = {}
        if "image" in items[0]:
            batch["image"] = torch.stack([it["image"] for it in items])  # (B, C, H, W)
        if "label" in items[0]:
            batch["label"] = torch.tensor([int(it["label"]) for it in items], dtype=torch.long)
        captions = [it["caption"] for it in items]
        batch["caption"] = captions
        batch.update(tokenize_captions(captions, self.tokenizer, self.context_length, **self.kw))
        if "negative_caption" in items[0]:  # hard negatives (e.g. shapes with negatives=True)
            negatives = [it["negative_caption"] for it in items]
            batch["negative_caption"] = negatives
            tokens = tokenize_captions(negatives, self.tokenizer, self.context_length, **self.kw)
            batch.update({f"negative_{k}": v for k, v in tokens.items()})
        if "negative_image" in items[0]:  # hard-negative images (shapes with negative_images=True)
            batch["negative_image"] = torch.stack([it["negative_image"] for it in items])  # (B, C, H, W)
        return batch


def caption_collate(tokenizer="byte", context_length: int = 77, **kw) -> CaptionCollate:
    """Shorthand: ``caption_collate("clip_bpe", 77)``."""
    return CaptionCollate(tokenizer, context_length, **kw)


class ImageTokenMemo:
    """The tokens a frozen image tokenizer gave each image seen so far, keyed by a hash of its
    pixels: fixed datasets revisit their images every epoch, and a frozen VQ gives the same
    tokens for the same pixels. Holds at most `max_entries` images (past that, new images are
    encoded every time)."""

    def __init__(self, max_entries: int = 500_000):
        self.max_entries = max_entries
        self._tokens: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def clear(self) -> None:
        self._tokens.clear()

    @torch.no_grad()
    def encode(self, tokenizer, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) on the CPU -> tokenizer.encode_tokens(images) (B, ...) on the CPU,
        calling the tokenizer once for the images not seen before."""
        keys = [hashlib.blake2b(im.numpy().tobytes(), digest_size=16).digest() for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._tokens]
        fresh = {}
        if todo:
            new = tokenizer.encode_tokens(images[todo].to(tokenizer.device)).cpu()
            fresh = dict(zip(todo, new))
            if len(self._tokens) < self.max_entries:
                self._tokens.update(zip((keys[i] for i in todo), new))
        return torch.stack([fresh[i] if i in fresh else self._tokens[k] for i, k in enumerate(keys)])
