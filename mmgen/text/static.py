"""Static-shape KV-cache decoding for GPT, so one compiled decode step serves every position.

The regular cache (`mmgen.layers.KVCache`) returns the keys written so far, `[:start + T]`,
whose length grows every step: torch.compile would recompile (or go dynamic) each time.
`StaticKVCache` instead writes the new key/value at a position held in a tensor
(`index_copy_`) and always returns the whole preallocated buffer; a boolean mask
(key position <= current position) hides the unwritten tail. Every decode step then has the
same shapes and the same graph, and `torch.compile` compiles it once.

`StaticDecoder(gpt, batch, max_len, compile=True).generate(prompts, max_new_tokens, ...)`:
the prompt is prefilled on the eager path (its shapes vary), then each token goes through
the (compiled) one-token step; sampling is `mmgen.text.sampling.sample_next`. If compiling
fails (no C++ compiler, unsupported backend) the decoder falls back to the eager step and
says why in `compile_error`. Equal-length prompts only (no left padding).
"""
from __future__ import annotations

import time

import torch

from ..layers import KVCache
from .sampling import SamplingParams, make_generator, sample_next


class StaticKVCache(KVCache):
    """KVCache whose `update` writes at `self.pos` (a (T,) long tensor) and returns the full
    (B, Hkv, max_len, D) buffers when `pos` is set; the regular slicing path otherwise."""

    pos: torch.Tensor | None = None

    def update(self, start, k, v):
        if self.pos is None:
            return super().update(start, k, v)
        self.k.index_copy_(2, self.pos, k.to(self.k.dtype))
        self.v.index_copy_(2, self.pos, v.to(self.v.dtype))
        return self.k, self.v


class StaticDecoder:
    def __init__(self, model, batch: int = 1, max_len: int | None = None, *, compile: bool = True,
                 compile_mode: str | None = None):
        self.model = model
        self.batch = batch
        self.max_len = max_len or model.config.context_length
        if self.max_len > model.config.context_length:
            raise ValueError(f"max_len {self.max_len} exceeds the model context {model.config.context_length}")
        dev = model.tok_embed.weight.device
        blk = model.transformer.blocks[0].attn
        dtype = model.tok_embed.weight.dtype
        self.caches = [StaticKVCache(batch, self.max_len, blk.num_kv_heads, blk.head_dim, dtype=dtype, device=dev)
                       for _ in model.transformer.blocks]
        self.key_pos = torch.arange(self.max_len, device=dev)
        self.compile_error: str | None = None
        self.compile_s: float | None = None
        self._step = self._eager_step
        if compile:
            try:
                self._step = torch.compile(self._eager_step, mode=compile_mode, dynamic=False)
            except Exception as e:  # noqa: BLE001 - fall back to eager, report why
                self.compile_error = f"{type(e).__name__}: {e}"[:300]

    def _eager_step(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tok (B, 1) ids at position pos (1,) -> next-token logits (B, V); fixed shapes."""
        m = self.model
        for c in self.caches:
            c.pos = pos
        x = m.tok_embed(tok)  # (B, 1, dim); the learned table is indexed without GPT.embed's range check
        if m.pos_embed is not None:
            x = x + m.pos_embed.weight[pos][None].to(x.dtype)
        mask = (self.key_pos <= pos)[None, None, None, :]  # (1, 1, 1, max_len): written keys only
        h = m.transformer(x, positions=pos.expand(tok.shape[0], 1) if m.config.pos == "rope" else None,
                          attn_mask=mask, cache=self.caches, start=0)
        return m.head(h)[:, -1]

    def step(self, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self._step is not self._eager_step and self.compile_s is None:
            t0 = time.perf_counter()
            try:
                out = self._step(tok, pos)
                self.compile_s = time.perf_counter() - t0
                return out
            except Exception as e:  # noqa: BLE001 - compile failed at first call: eager from now on
                self.compile_error = f"{type(e).__name__}: {e}"[:300]
                self._step = self._eager_step
        return self._step(tok, pos)

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int = 64, *, temperature: float = 1.0, top_k=None, top_p=None,
                 min_p=None, seed: int | None = None) -> list[list[int]]:
        m = self.model
        ids = torch.as_tensor(prompts, dtype=torch.long, device=self.key_pos.device)
        if ids.ndim == 1:
            ids = ids[None]
        B, P = ids.shape
        if B != self.batch:
            raise ValueError(f"this decoder was built for batch {self.batch}, got {B} prompts")
        if P + max_new_tokens > self.max_len:
            raise ValueError(f"prompt {P} + max_new_tokens {max_new_tokens} exceeds max_len {self.max_len}")
        params = SamplingParams(temperature, top_k, top_p, min_p)
        gen = make_generator(seed, ids.device)
        was = m.training
        m.eval()
        try:
            for c in self.caches:
                c.pos = None
            logits = m(ids, cache=self.caches)[:, -1]  # eager prefill through the slicing path
            out = []
            for i in range(max_new_tokens):
                nxt = sample_next(logits, params, None, gen)  # (B,)
                out.append(nxt)
                if i == max_new_tokens - 1:
                    break
                pos = torch.tensor([P + i], device=ids.device)
                logits = self.step(nxt[:, None], pos)
        finally:
            for c in self.caches:
                c.pos = None
            m.train(was)
        return torch.stack(out, 1).tolist() if out else [[] for _ in range(B)]
