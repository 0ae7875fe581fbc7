"""Prefix tuning (Li & Liang, 2021): learned key/value prefixes for every attention layer of
a frozen `mmgen.layers.Transformer` (P-tuning's virtual input tokens are in ptuning.py).

`PrefixTuning(transformer, num_virtual)` holds keys and values (depth, Hkv, P, head_dim)
and builds KV caches pre-filled with them (`make_cache`); the real tokens are then run as if
they came after P cached positions (`start=P`), so every query sees the P virtual keys plus
the usual causal window, while the tokens keep their own positions 0..T-1 (learned position
tables and RoPE are untouched). No change to mmgen.layers was needed: the cache write is
differentiable, so gradients flow into the prefix.

`PrefixGPT(gpt, num_virtual)` wraps a GPT: the base is frozen, `loss(batch)` trains the
prefix only, `generate(prompt, ...)` decodes on the pre-filled cache with the shared sampler,
and `save_prefix` / `load_prefix` write only the prefix (safetensors).
`init_from_text(ids)` starts the prefix from the base model's own keys/values of a text,
which trains faster and more stably than a random start.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..layers import KVCache
from .virtual import VirtualTokenGPT


class PrefixTuning(nn.Module):
    def __init__(self, transformer: nn.Module, num_virtual: int, *, init_std: float = 0.02):
        super().__init__()
        if num_virtual < 1:
            raise ValueError(f"num_virtual must be >= 1, got {num_virtual}")
        attn = transformer.blocks[0].attn
        depth, hkv, d = len(transformer.blocks), attn.num_kv_heads, attn.head_dim
        self.num_virtual = num_virtual
        w = attn.proj.weight
        self.keys = nn.Parameter(torch.randn(depth, hkv, num_virtual, d, device=w.device) * init_std)
        self.values = nn.Parameter(torch.randn(depth, hkv, num_virtual, d, device=w.device) * init_std)

    def make_cache(self, batch: int, max_len: int, *, dtype=None) -> list[KVCache]:
        """Per-layer caches of num_virtual + max_len positions, the first num_virtual holding the
        prefix (written through autograd, so the loss reaches keys / values)."""
        P = self.num_virtual
        L, H, _, D = self.keys.shape
        caches = []
        for i in range(L):
            c = KVCache(batch, P + max_len, H, D, dtype=dtype or self.keys.dtype, device=self.keys.device)
            c.update(0, self.keys[i].expand(batch, H, P, D).to(c.k.dtype), self.values[i].expand(batch, H, P, D).to(c.v.dtype))
            caches.append(c)
        return caches

    @torch.no_grad()
    def init_from_cache(self, caches: list[KVCache]) -> None:
        P = self.num_virtual
        for i, c in enumerate(caches):
            self.keys[i].copy_(c.k[0, :, :P])
            self.values[i].copy_(c.v[0, :, :P])


class PrefixGPT(VirtualTokenGPT):
    """A frozen GPT with a trainable KV prefix (training contract: loss / example_batch)."""

    def __init__(self, gpt: nn.Module, num_virtual: int = 16):
        super().__init__()
        self.gpt = gpt.requires_grad_(False)
        self.prefix = PrefixTuning(gpt.transformer, num_virtual)
        self.config = gpt.config

    @property
    def num_virtual(self) -> int:
        return self.prefix.num_virtual

    @torch.no_grad()
    def init_from_text(self, ids: list[int]) -> None:
        """Start the prefix from the base model's keys/values of `ids` (num_virtual tokens)."""
        ids = self._check_init_ids(ids, "prefix")
        cache = self.gpt.make_cache(1, self.num_virtual)
        self.gpt(torch.tensor([ids], device=self.prefix.keys.device), cache=cache)
        self.prefix.init_from_cache(cache)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab), every token also attending to the prefix."""
        B, T = input_ids.shape
        cache = self.prefix.make_cache(B, T)
        pos = torch.arange(T, device=input_ids.device)
        return self.gpt(input_ids, positions=pos, cache=cache, start=self.num_virtual)

    def _prefill(self, ids, max_new_tokens):
        B, T = ids.shape
        cache = self.prefix.make_cache(B, T + max_new_tokens)
        logits = self.gpt(ids, positions=torch.arange(T, device=ids.device), cache=cache, start=self.num_virtual)
        return logits[:, -1], cache

    def _decode(self, tok, pos, cache, start):
        return self.gpt(tok, positions=pos, cache=cache, start=start)[:, -1]

    def save_prefix(self, path: str | Path) -> Path:
        from safetensors.torch import save_file
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"keys": self.prefix.keys.detach().cpu().contiguous(),
                   "values": self.prefix.values.detach().cpu().contiguous()}, str(path / "prefix.safetensors"))
        return path

    def load_prefix(self, path: str | Path) -> None:
        from safetensors.torch import load_file
        f = Path(path) / "prefix.safetensors"
        if not f.exists():
            raise FileNotFoundError(f"no prefix.safetensors in {path}")
        sd = load_file(str(f))
        if sd["keys"].shape != self.prefix.keys.shape:
            raise ValueError(f"saved prefix has shape {tuple(sd['keys'].shape)}, this model expects "
                             f"{tuple(self.prefix.keys.shape)}")
        with torch.no_grad():
            self.prefix.keys.copy_(sd["keys"])
            self.prefix.values.copy_(sd["values"])


def add_prefix(model: nn.Module, transformer: str, num_virtual: int = 8, *, freeze_base: bool = True) -> PrefixTuning:
    """Prefix-tune any model built on `mmgen.layers.Transformer` without touching its code:
    `add_prefix(clip, "text.transformer", 8)` (CLIP's text tower), `add_prefix(gpt, "transformer")`.

    A forward pre-hook on the named Transformer gives every call made without a cache a KV
    cache pre-filled with the learned prefix (`start=num_virtual`), keeps the tokens' own
    positions (RoPE positions default to 0..T-1, not P..P+T-1) and extends a key-padding mask
    with the always-visible prefix. The PrefixTuning module is registered on the model as
    `prefix_tuning` (so its keys/values are the model's trainable parameters and are saved
    with it); with freeze_base every other parameter is frozen. Calls that pass their own cache
    (GPT.generate) are left alone: decode with PrefixGPT.generate for prefix-tuned decoders."""
    tr = model.get_submodule(transformer)
    if not hasattr(tr, "blocks") or not hasattr(tr, "make_cache"):
        raise ValueError(f"{transformer!r} is a {type(tr).__name__}, not an mmgen.layers.Transformer")
    if freeze_base:
        model.requires_grad_(False)
    prefix = PrefixTuning(tr, num_virtual)
    model.prefix_tuning = prefix
    P = num_virtual

    def hook(mod, args, kwargs):
        if kwargs.get("cache") is not None:
            return None
        x = args[0] if args else kwargs["x"]
        B, T = x.shape[0], x.shape[1]
        kwargs = dict(kwargs)
        kwargs["cache"] = prefix.make_cache(B, T, dtype=x.dtype)
        kwargs["start"] = P
        if mod.rope is not None and kwargs.get("positions") is None:
            kwargs["positions"] = torch.arange(T, device=x.device)
        kp = kwargs.get("key_padding")
        if kp is not None:
            kwargs["key_padding"] = torch.cat([torch.ones(B, P, dtype=torch.bool, device=kp.device), kp.bool()], 1)
        return args, kwargs

    prefix._hook = tr.register_forward_pre_hook(hook, with_kwargs=True)
    return prefix


def remove_prefix(model: nn.Module) -> None:
    prefix = getattr(model, "prefix_tuning", None)
    if prefix is None:
        raise ValueError("this model has no prefix (add_prefix was not called)")
    prefix._hook.remove()
    del model.prefix_tuning
