"""Next-token sampling shared by every autoregressive model (GPT text, DALL-E image tokens).

One logits-processor pipeline, applied in this order to the (B, V) logits of the next
position:

1. repetition penalty (CTRL / HF): logits of tokens already in the sequence are divided
   by the penalty when positive and multiplied by it when negative;
2. temperature (0 means greedy: argmax after the penalty);
3. top-k: keep the k largest logits;
4. top-p (nucleus): keep the smallest set of tokens whose probability sums to >= p;
5. min-p: drop tokens whose probability is below min_p times the most likely one's.

Filtered tokens get -inf; `sample_next` then draws from the softmax with an optional
seeded `torch.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages repeats

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] or None, got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V); seen (B, V) bool, True for tokens already in the row's sequence."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their probability reaches p
    (the token that crosses p is kept, so at least one token always survives)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass strictly before each token
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens with probability < min_p * max probability (Nguyen et al., 2024)."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(-1)
    threshold = min_p * probs.max(-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None) -> torch.Tensor:
    """The whole pipeline on (B, V) logits; returns float32 logits with -inf where filtered.
    With temperature 0 only the repetition penalty applies (greedy takes the argmax)."""
    if logits.ndim != 2:
        raise ValueError(f"expected next-token logits (batch, vocab), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.greedy:
        return logits
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k is not None:
        logits = top_k_filter(logits, int(params.top_k))
    if params.top_p is not None:
        logits = top_p_filter(logits, params.top_p)
    if params.min_p is not None:
        logits = min_p_filter(logits, params.min_p)
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids, through `process_logits`."""
    logits = process_logits(logits, params, seen)
    if params.greedy:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A seeded generator on `device`, or None (use the global RNG) when seed is None."""
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class StopChecker:
    """Stop sequences for a batch of rows: token-id sequences match the tail of a row's
    generated ids; strings (with a tokenizer) match the decoded tail of the generated
    text. `update(row, token)` returns True once the row ends with a stop sequence."""

    def __init__(self, batch: int, stop=None, *, eos_id: int | None = None, tokenizer=None):
        self.id_seqs: list[list[int]] = []
        self.strings: list[str] = []
        for s in [] if stop is None else ([stop] if isinstance(stop, str) else list(stop)):
            if isinstance(s, str):
                if tokenizer is None:
                    raise ValueError(f"stop string {s!r} needs tokenizer=...; or pass token-id sequences")
                if s:
                    self.strings.append(s)
            elif isinstance(s, int):
                self.id_seqs.append([s])
            else:
                seq = [int(t) for t in s]
                if not seq:
                    raise ValueError("empty stop sequence")
                self.id_seqs.append(seq)
        if eos_id is not None:
            self.id_seqs.append([int(eos_id)])
        self.tokenizer = tokenizer
        self.generated: list[list[int]] = [[] for _ in range(batch)]
        # tokens to decode to see a stop string: every token is at least one byte
        self._tail = max((len(s.encode("utf-8")) for s in self.strings), default=0) + 4

    def update(self, row: int, token: int) -> bool:
        gen = self.generated[row]
        gen.append(token)
        for seq in self.id_seqs:
            if len(gen) >= len(seq) and gen[-len(seq):] == seq:
                return True
        if self.strings:
            tail = self.tokenizer.decode(gen[-self._tail:])
            return any(s in tail for s in self.strings)
        return False
