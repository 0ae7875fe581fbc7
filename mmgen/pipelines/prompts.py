"""What a model can read: one `PromptReader` per model part that reads prompts (the DALL-E
generator, a CLIP text encoder, a CLIP reranker), with its vocabulary, the words of a prompt
it cannot read, and the punctuation it drops."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Sequence

from ..text.captions import quiet  # noqa: F401  (the pipelines' name for it)

WORD_RE = re.compile(r"\w+", re.UNICODE)  # a word: a run of letters / digits (as DALL-E records them)
PUNCT_RE = re.compile(r"[^\w\s]+", re.UNICODE)


def prompt_words(text: str) -> list[str]:
    """Lower-cased words of a prompt (runs of letters/digits; punctuation is not a word)."""
    return WORD_RE.findall(text.lower())


@lru_cache(maxsize=8)
def corpus_words(source: str) -> frozenset[str]:
    """The words of the captions a tokenizer was pruned to (a dataset name or module:function);
    empty when they cannot be read here."""
    from ..text.captions import caption_corpus
    try:
        if source == "emoji":  # the names alone: no need to decode the images
            from ..data.emoji import load_meta
            from ..data.base import split_indices
            meta = load_meta()
            captions = [meta["name"][i] for i in split_indices(len(meta["name"]), "train", groups=meta["base"])]
        else:
            captions = caption_corpus(source)
    except Exception:  # noqa: BLE001 - a vocabulary listing must not fail on a missing optional data set
        return frozenset()
    return frozenset(w for c in captions for w in prompt_words(c))


class PromptReader:
    """One part of a pipeline that reads prompts.

    name: how messages call it ("the DALL-E generator", "the CLIP reranker");
    tokenizer: an mmgen.text tokenizer (a pruned one reads unknown BPE pieces as <unk>);
    seen: word -> bool, the words it saw in training (None: any word its tokenizer reads);
    corpus: the caption source its vocabulary was pruned to (for listing the vocabulary);
    required: a prompt with no word this part can read is refused (else only warned about);
    max_tokens / count: its context length and how many tokens a prompt takes (None: no limit)."""

    def __init__(self, name: str, tokenizer, *, seen: Callable[[str], bool] | None = None, corpus: str = "",
                 required: bool = True, max_tokens: int | None = None, truncates: bool = False):
        self.name, self.tokenizer, self.seen, self.corpus = name, tokenizer, seen, corpus
        self.required, self.max_tokens, self.truncates = required, max_tokens, truncates
        self.unk = getattr(tokenizer, "unk_id", None)

    def _reads(self, text: str) -> bool:
        return self.unk is None or self.unk not in self.tokenizer.encode(text)

    def clean(self, prompt: str) -> str:
        """The prompt as this part gets it: punctuation it cannot read (e.g. a full stop for a
        vocabulary pruned to captions without one) is dropped, not turned into <unk>."""
        if self._reads(prompt):  # covers "woman's": the BPE reads "'s" though not a lone "'"
            return prompt
        out = PUNCT_RE.sub(lambda m: m.group(0) if self._reads(m.group(0)) else " ", prompt)
        return " ".join(out.split())

    def unknown_words(self, prompt: str) -> list[str]:
        """The words of the prompt this part cannot read (unknown to its tokenizer, or never
        seen in its training captions), in order, without repeats."""
        out = []
        for w in dict.fromkeys(prompt_words(prompt)):
            if not self._reads(w) or (self.seen is not None and not self.seen(w)):
                out.append(w)
        return out

    def num_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(self.clean(prompt), add_bos=True, add_eos=True))

    def vocabulary(self) -> set[str] | None:
        """The words this part reads, or None when it reads any text (byte-level, full BPE)."""
        if self.unk is None and self.seen is None:
            return None
        words = corpus_words(self.corpus) if self.corpus else frozenset()
        if not words:  # no caption list: the whole-word tokens of its vocabulary
            strings = getattr(self.tokenizer, "token_strings", lambda: [])()
            words = {s[:-4] for s in strings if s.endswith("</w>") and WORD_RE.fullmatch(s[:-4])}
        return {w for w in words if self._reads(w) and (self.seen is None or self.seen(w))}


def check_prompts(readers: Sequence[PromptReader], prompts, truncate: bool = False,
                  model_name: str = "") -> list[str]:
    """Refuse what no model part can use; return warnings (one line each) for the rest.

    ValueError: not a list of str, an empty prompt, a prompt longer than a part's context
    (unless truncate, then a warning), a prompt with no word a required part can read."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    vocab_hint = f" (see `mmgen vocab {model_name}`)" if model_name else ""
    notes = []
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"prompts must be str, got {type(p).__name__}")
        if not p.strip():
            raise ValueError("empty prompt: describe the image, e.g. 'a red circle above a blue square'")
        short = p if len(p) <= 50 else p[:50] + "..."
        words = prompt_words(p)
        if not words and any(r.required for r in readers):
            raise ValueError(f"prompt {short!r} has no word, only punctuation")
        missing: dict[str, list[str]] = {}  # word -> the parts that cannot read it
        for r in readers:
            unknown = r.unknown_words(p)
            if words and len(unknown) == len(dict.fromkeys(words)):
                if r.required:
                    raise ValueError(f"prompt {short!r} has no word {r.name} can read, so it would be ignored"
                                     f"{vocab_hint}")
                notes.append(f"prompt {short!r}: {r.name} can read none of its words, so its scores say nothing")
                unknown = []
            if r.max_tokens is not None:
                n = r.num_tokens(p)
                if n > r.max_tokens:
                    if not (truncate or r.truncates):
                        raise ValueError(f"prompt {short!r} is {n} tokens with BOS/EOS; {r.name} reads at most "
                                         f"{r.max_tokens}: shorten it, or pass truncate=True (--truncate) to cut it")
                    notes.append(f"prompt {short!r} is {n} tokens; cut to the {r.max_tokens} that {r.name} reads, "
                                 f"so its end is ignored")
            for w in unknown:
                missing.setdefault(w, []).append(r.name)
        by_parts: dict[tuple, list[str]] = {}
        for w, parts in missing.items():
            by_parts.setdefault(tuple(parts), []).append(w)
        for parts, ws in by_parts.items():
            listed = ", ".join(repr(w) for w in ws[:8]) + (", ..." if len(ws) > 8 else "")
            verb = "is" if len(ws) == 1 else "are"
            notes.append(f"prompt {short!r}: {listed} {verb} not in the vocabulary of {' nor of '.join(parts)}; "
                         f"it will likely be ignored{vocab_hint}")
    return notes
