"""Captions -> tokens, one way for every model: the fixed-length caption tokenizer
(`CaptionTokenizer`: BOS, tokens, EOS, padding to the context length), the caption corpus
a vocabulary is pruned to (`caption_corpus`), and a model config's vocabulary resolved from
it once, before the model is built (`resolve_vocabulary`).

    tok = tokenizer_from_captions("shapes:val")        # clip_bpe pruned to those captions
    ids = CaptionTokenizer(tok, context_length=16)(["a red circle"])  # (1, 16) LongTensor
"""
from __future__ import annotations

import dataclasses
import importlib
import warnings
from typing import Any, Sequence

import torch

from .tokenizers import Tokenizer, get_tokenizer, tokenizer_from_dict


class CaptionTokenizer:
    """Callable turning captions into a (N, context_length) LongTensor: BOS, the tokens, EOS,
    then padding (mmgen.data's `tokenize_captions`). The shape open_clip's
    `build_zero_shot_classifier` expects of a tokenizer.

    Text that does not fit raises a ValueError naming the caption and both lengths (and
    `hint`, how to cut it); with truncate=True it is cut (keeping EOS last) with a warning
    instead. Never a silent cut. warn_unknown: say once when a text holds words outside a
    pruned vocabulary (read as <unk>)."""

    def __init__(self, tokenizer: Tokenizer, context_length: int, *, truncate: bool = False,
                 hint: str = "truncate=True cuts with a warning", warn_unknown: bool = True):
        self.tokenizer, self.context_length, self.truncate = tokenizer, context_length, truncate
        self.hint, self.warn_unknown = hint, warn_unknown
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
            raise ValueError(f"{e} ({self.hint})") from None
        unk = getattr(self.tokenizer, "unk_id", None)
        if self.warn_unknown and unk is not None and unk != self.tokenizer.pad_id:
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


def caption_corpus(source: str, extra: Sequence[str] = (), **data_kwargs: Any) -> list[str]:
    """The captions a vocabulary is pruned to, plus `extra` texts. `source` is
      "package.module:function"  called with no arguments;
      "name:split"               the captions of that split of dataset `name` (data_kwargs go
                                 to mmgen.data.build_dataset);
      "name"                     the dataset module's `all_captions()` when it has one and no
                                 data_kwargs are given (shapes: every caption of the grammar),
                                 else the captions of its train split."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"caption source must be a dataset name, 'name:split' or 'module:function', got {source!r}")
    head, _, tail = source.partition(":")
    if tail and "." in head:
        return list(getattr(importlib.import_module(head), tail)()) + list(extra)
    if not tail and not data_kwargs:
        try:
            mod = importlib.import_module(f"mmgen.data.{head}")
        except ImportError:
            mod = None
        if mod is not None and hasattr(mod, "all_captions"):
            return list(mod.all_captions()) + list(extra)
    from ..data import build_dataset
    return dataset_captions(build_dataset(head, split=tail or "train", **data_kwargs)) + list(extra)


def tokenizer_from_captions(source: str, extra: Sequence[str] = (), **data_kwargs: Any) -> Tokenizer:
    """open_clip's BPE pruned to `caption_corpus(source, extra, **data_kwargs)`."""
    return get_tokenizer("clip_bpe", captions=caption_corpus(source, extra, **data_kwargs))


def build_tokenizer(name: str, state: dict | None = None) -> Tokenizer:
    """`get_tokenizer(name)`, or the saved (e.g. pruned) one rebuilt from `state` (its `to_dict()`)."""
    return tokenizer_from_dict(state) if state else get_tokenizer(name)


def resolve_vocabulary(config, tokenizer: Tokenizer | None = None):
    """A copy of a model config (with fields `tokenizer`, `tokenizer_state`,
    `tokenizer_captions`, `tokenizer_captions_kwargs`, `tokenizer_captions_extra`) whose
    tokenizer is fixed in `tokenizer_state`: the given tokenizer, or clip_bpe pruned to the
    captions of `tokenizer_captions` (this builds the dataset: done once, before the model
    is built; checkpoints then rebuild the tokenizer from the state alone). The config
    passed in is left as it was."""
    if tokenizer is not None:
        return dataclasses.replace(config, tokenizer=getattr(tokenizer, "name", config.tokenizer),
                                   tokenizer_state=tokenizer.to_dict())
    if config.tokenizer_state or not config.tokenizer_captions:
        return config
    if config.tokenizer != "clip_bpe":
        raise ValueError(f"tokenizer_captions prunes a clip_bpe vocabulary; tokenizer={config.tokenizer!r} has "
                         f"nothing to prune (set tokenizer='clip_bpe' or drop tokenizer_captions)")
    tok = tokenizer_from_captions(config.tokenizer_captions, config.tokenizer_captions_extra,
                                  **config.tokenizer_captions_kwargs)
    return dataclasses.replace(config, tokenizer_state=tok.to_dict())


def check_vocabulary_resolved(config, model_name: str) -> None:
    """Raise when a config still names captions to prune its vocabulary to: the model
    constructor never builds a dataset."""
    if config.tokenizer_captions and not config.tokenizer_state:
        raise ValueError(f"{model_name} config names tokenizer_captions={config.tokenizer_captions!r} but holds no "
                         f"tokenizer_state: build it with mmgen.create_model(...) or {model_name}.create(config), "
                         f"which prune the vocabulary once before the model is built")


def quiet(fn, *args, **kwargs):
    """Call fn with the tokenizers' own <unk> / truncation warnings silenced (for callers that
    have already said what they would, naming the word and the model part, or that cut
    captions on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(<unk>|pruned vocabulary|tokens; cut|truncat)")
        return fn(*args, **kwargs)
