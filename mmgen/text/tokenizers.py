"""Tokenizers shared by every text tower (GPT, CLIP, DDPM conditioning, DALL-E).

Two families behind one interface (:class:`Tokenizer`):

* ``ByteTokenizer`` -- UTF-8 bytes. Ids ``0..255`` are the bytes themselves, then the
  specials ``bos=256``, ``eos=257``, ``pad=258`` (``vocab_size=259``). Any text in any
  language (Chinese, emoji, ...) round-trips exactly.
* ``ClipBPETokenizer`` -- open_clip's ``SimpleTokenizer`` (the CLIP BPE, 49,408 tokens,
  vocabulary shipped inside the open_clip wheel, no download). Like CLIP it lower-cases and
  normalises whitespace, so the round trip is up to that cleaning. ``bos`` is
  ``<start_of_text>`` (49406), ``eos`` is ``<end_of_text>`` (49407) and ``pad`` is 0 as in
  open_clip (the attention mask, not the id, tells padding apart).
  ``ClipBPETokenizer.pruned(captions)`` keeps only the BPE tokens that occur in
  ``captions`` (plus pad/unk/bos/eos) with an id remap, for tiny text towers whose
  49,408-row embedding would dwarf the model.

Every tokenizer saves to / loads from ``<dir>/tokenizer.json`` so a checkpoint directory
can carry its (pruned) vocabulary: ``tok.save(dir)``, ``load_tokenizer(dir)``.

    >>> tok = get_tokenizer("byte")
    >>> tok.decode(tok.encode("你好 😀", add_bos=True, add_eos=True))
    '你好 😀'
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Iterable, Sequence

TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """Interface: ``encode``/``decode``, ``vocab_size``, ``bos_id``/``eos_id``/``pad_id``,
    ``save(dir)`` and ``load(dir)``."""

    name: str = "base"
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._encode(text)
        if add_bos:
            ids = [self.bos_id] + ids
        if add_eos:
            ids = ids + [self.eos_id]
        return ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                     add_eos: bool = False) -> list[list[int]]:
        return [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; special tokens (bos/eos/pad) are dropped."""
        raise NotImplementedError

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    @property
    def special_ids(self) -> set[int]:
        return {self.bos_id, self.eos_id, self.pad_id}

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> str:
        """Write ``<directory>/tokenizer.json``; returns its path."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, TOKENIZER_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        tok = load_tokenizer(directory)
        if cls is not Tokenizer and not isinstance(tok, cls):
            raise ValueError(f"{directory} holds a {type(tok).__name__}, expected {cls.__name__}")
        return tok

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"{type(self).__name__}.decode: ids must be in [0, {self.vocab_size}), "
                             f"got {bad[:5]}")
        return ids

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
    """UTF-8 byte tokenizer: ids 0..255 are bytes, then bos, eos, pad."""

    name = "byte"

    def __init__(self):
        self.bos_id, self.eos_id, self.pad_id = 256, 257, 258
        self.vocab_size = 259

    def _encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        # invalid UTF-8 (e.g. a sampled byte sequence cut mid-character) -> U+FFFD, never raises
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": "byte", "vocab_size": self.vocab_size}


@lru_cache(maxsize=1)
def _simple_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class ClipBPETokenizer(Tokenizer):
    """open_clip's CLIP BPE, optionally pruned to the tokens a caption corpus uses.

    Full vocabulary: ids are open_clip's (49,408; bos 49406, eos 49407, pad 0), so
    ``encode`` matches ``open_clip.tokenize`` exactly.
    Pruned vocabulary: new ids ``0=pad, 1=unk, 2=bos, 3=eos`` then the kept BPE tokens in
    original-id order; ``kept`` lists their original ids. A BPE token not seen when pruning
    encodes to ``unk_id`` and decodes as ``"<unk> "``.
    """

    name = "clip_bpe"
    N_SPECIAL_PRUNED = 4

    def __init__(self, kept: Sequence[int] | None = None):
        self._st = _simple_tokenizer()
        self.kept = None if kept is None else [int(i) for i in kept]
        if self.kept is None:
            self.vocab_size = len(self._st.encoder)  # 49408
            self.bos_id, self.eos_id = self._st.sot_token_id, self._st.eot_token_id
            self.pad_id = 0
            self.unk_id = None
        else:
            n_full = len(self._st.encoder)
            bad = [i for i in self.kept if not 0 <= i < n_full]
            if bad:
                raise ValueError(f"kept ids must be in [0, {n_full}), got {bad[:5]}")
            specials = {self._st.sot_token_id, self._st.eot_token_id}
            self.kept = sorted(set(self.kept) - specials)
            self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
            self._to_new = {o: n + self.N_SPECIAL_PRUNED for n, o in enumerate(self.kept)}
            self.vocab_size = self.N_SPECIAL_PRUNED + len(self.kept)

    @property
    def is_pruned(self) -> bool:
        return self.kept is not None

    def _encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"ClipBPETokenizer.encode expects a str, got {type(text).__name__}")
        ids = self._st.encode(text)
        if self.kept is None:
            return ids
        return [self._to_new.get(i, self.unk_id) for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        ids = self._check_ids(ids)
        if self.kept is None:
            if self.eos_id in ids:  # everything after the first eos is padding
                ids = ids[:ids.index(self.eos_id)]
            orig = [i for i in ids if i != self.bos_id]
            # pad (0) is also the BPE token "!" (never word-final, so never last in a word):
            # drop only trailing pads
            while orig and orig[-1] == self.pad_id:
                orig.pop()
            return self._st.decode(orig).strip()
        pieces, run = [], []
        for i in ids:
            if i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            if i == self.unk_id:
                if run:
                    pieces.append(self._st.decode(run))
                    run = []
                pieces.append("<unk> ")
            else:
                run.append(self.kept[i - self.N_SPECIAL_PRUNED])
        if run:
            pieces.append(self._st.decode(run))
        return "".join(pieces).strip()

    def token_strings(self) -> list[str]:
        """The token string of every id (specials included), e.g. for inspecting a pruned vocab."""
        if self.kept is None:
            return [self._st.decoder[i] for i in range(self.vocab_size)]
        return ["<pad>", "<unk>", "<start_of_text>", "<end_of_text>"] + [self._st.decoder[i] for i in self.kept]

    @classmethod
    def pruned(cls, captions: Iterable[str]) -> "ClipBPETokenizer":
        """A tokenizer keeping only the BPE tokens used by ``captions`` (+ pad/unk/bos/eos)."""
        st = _simple_tokenizer()
        seen: set[int] = set()
        n = 0
        for c in captions:
            seen.update(st.encode(c))
            n += 1
        if n == 0:
            raise ValueError("ClipBPETokenizer.pruned needs at least one caption, got none")
        return cls(kept=sorted(seen))

    def to_dict(self) -> dict:
        d = {"type": "clip_bpe", "vocab_size": self.vocab_size}
        if self.kept is not None:
            d["kept"] = self.kept
            d["specials"] = {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id}
        return d


_TOKENIZERS = {"byte": ByteTokenizer, "clip_bpe": ClipBPETokenizer}


def get_tokenizer(name: str = "byte", **kw) -> Tokenizer:
    """``get_tokenizer("byte")`` or ``get_tokenizer("clip_bpe")`` (``kept=[...]`` for a
    pruned one; or ``get_tokenizer("clip_bpe", captions=[...])`` to prune on the fly).
    A path to a directory holding ``tokenizer.json`` is also accepted."""
    if name in _TOKENIZERS:
        if name == "clip_bpe" and "captions" in kw:
            caps = kw.pop("captions")
            if kw:
                raise ValueError(f"get_tokenizer('clip_bpe', captions=...) takes no other options, got {sorted(kw)}")
            return ClipBPETokenizer.pruned(caps)
        return _TOKENIZERS[name](**kw)
    if os.path.isfile(os.path.join(str(name), TOKENIZER_FILE)):
        return load_tokenizer(name)
    raise ValueError(f"unknown tokenizer {name!r}: expected one of {sorted(_TOKENIZERS)} "
                     f"or a directory containing {TOKENIZER_FILE}")


def tokenizer_from_dict(d: dict) -> Tokenizer:
    kind = d.get("type")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "clip_bpe":
        return ClipBPETokenizer(kept=d.get("kept"))
    raise ValueError(f"unknown tokenizer type {kind!r} in tokenizer json; expected 'byte' or 'clip_bpe'")


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer saved by ``Tokenizer.save(directory)`` (``<directory>/tokenizer.json``;
    a path to the json file itself is accepted too)."""
    path = str(directory)
    if os.path.isdir(path):
        path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer found: expected {path}")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    tok = tokenizer_from_dict(d)
    if d.get("vocab_size", tok.vocab_size) != tok.vocab_size:
        raise ValueError(f"{path}: vocab_size {d['vocab_size']} does not match the rebuilt "
                         f"tokenizer ({tok.vocab_size})")
    return tok


def list_tokenizers() -> list[str]:
    return sorted(_TOKENIZERS)
