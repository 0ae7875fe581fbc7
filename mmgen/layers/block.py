"""TransformerBlock and the Transformer stack, assembled from one TransformerConfig."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .attention import ATTN_IMPLS, Attention, KVCache, check_heads, make_attn_mask
from .autograd import add_residual
from .cond import ADALN, AdaLNModulation, modulate
from .drop import DropPath, LayerScale
from .init import init_linears
from .mlp import MLPS, make_mlp, mlp_hidden_dim
from .norm import NORMS, make_norm
from .pos import ROPES, RotaryEmbedding

NORM_PLACES = ("pre", "post", "sandwich")


@dataclass
class TransformerConfig:
    embed_dim: int = 256
    depth: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None = num_heads (MHA); 1 = MQA; else GQA
    head_dim: int | None = None  # None = dim // num_heads
    mlp: str = "gelu"  # gelu | gelu_tanh | relu2 | swiglu | geglu
    mlp_ratio: float = 4.0
    mlp_multiple_of: int = 8  # gated MLP hidden rounded up to this (LLaMA)
    mlp_hidden: int | None = None  # exact hidden width, overrides ratio
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_bias: bool = True
    norm_place: str = "pre"  # pre | post | sandwich
    final_norm: bool = True  # a norm after the last block (pre-norm stacks want it)
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    qk_norm: bool = False  # normalise q and k per head (with `norm`)
    causal: bool = False
    window: int | None = None  # sliding-window attention span (keys per query)
    rope: str = "none"  # none | 1d | 2d
    rope_theta: float = 10000.0
    cross_attn: bool = False  # add a cross-attention sublayer to every block
    context_dim: int | None = None  # width of the cross-attention context (None = dim)
    adaln: str = "none"  # none | adaln | adaln_zero (needs cond_dim)
    cond_dim: int | None = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth, rising linearly to this over the depth
    layer_scale: float | None = None  # initial value of LayerScale, None = off
    attn_impl: str = "sdpa"  # sdpa | math (reference)

    def __post_init__(self):
        for name, value, allowed in (("mlp", self.mlp, MLPS), ("norm", self.norm, NORMS),
                                     ("norm_place", self.norm_place, NORM_PLACES), ("rope", self.rope, ROPES),
                                     ("adaln", self.adaln, ADALN), ("attn_impl", self.attn_impl, ATTN_IMPLS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.embed_dim < 1 or self.depth < 0:
            raise ValueError(f"embed_dim must be >= 1 and depth >= 0, got embed_dim={self.embed_dim}, "
                             f"depth={self.depth}")
        check_heads(self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim)
        if self.adaln != "none" and self.cond_dim is None:
            raise ValueError(f"adaln={self.adaln!r} needs cond_dim (the width of the condition vector)")
        if self.adaln != "none" and self.norm_place != "pre":
            raise ValueError("adaln modulates pre-norm blocks: set norm_place='pre'")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def resolved_kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.embed_dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        return self.mlp_hidden or mlp_hidden_dim(self.mlp, self.embed_dim, self.mlp_ratio, self.mlp_multiple_of)


class TransformerBlock(nn.Module):
    """One block: self-attention, optional cross-attention, MLP; each sublayer with its norm
    placed pre (x + f(n(x))), post (n(x + f(x))) or sandwich (x + n2(f(n1(x)))), plus
    layer scale, stochastic depth and optional adaLN(-Zero) modulation."""

    def __init__(self, cfg: TransformerConfig, drop_path: float = 0.0):
        super().__init__()
        self.cfg = cfg
        d, place = cfg.embed_dim, cfg.norm_place
        affine = cfg.adaln == "none"  # adaLN supplies the scale and shift itself

        def norm(affine_=True):
            return make_norm(cfg.norm, d, eps=cfg.norm_eps, bias=cfg.norm_bias, affine=affine_)

        attn_kw = dict(num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, qkv_bias=cfg.qkv_bias,
                       proj_bias=cfg.proj_bias, qk_norm=cfg.norm if cfg.qk_norm else None,
                       attn_dropout=cfg.attn_dropout, proj_dropout=cfg.dropout, impl=cfg.attn_impl)
        self.norm1 = norm(affine)
        self.attn = Attention(d, cfg.num_heads, rope_dims=2 if cfg.rope == "2d" else 1, **attn_kw)
        self.norm1_post = norm() if place == "sandwich" else None
        if cfg.cross_attn:
            self.norm_cross = norm()
            self.cross_attn = Attention(d, cfg.num_heads, context_dim=cfg.context_dim or d, **attn_kw)
            self.norm_cross_post = norm() if place == "sandwich" else None
        self.norm2 = norm(affine)
        self.mlp = make_mlp(cfg.mlp, d, cfg.hidden_dim, bias=cfg.mlp_bias, dropout=cfg.dropout)
        self.norm2_post = norm() if place == "sandwich" else None
        ls = cfg.layer_scale
        self.ls1 = LayerScale(d, ls) if ls is not None else nn.Identity()
        self.ls2 = LayerScale(d, ls) if ls is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if cfg.adaln != "none":
            self.modulation = AdaLNModulation(cfg.cond_dim, d, 6 if cfg.adaln == "adaln_zero" else 4,
                                              zero_init=cfg.adaln == "adaln_zero")

    def _residual(self, x, f, norm, post, ls):
        """Apply one sublayer f with the configured norm placement."""
        place = self.cfg.norm_place
        if place == "pre":
            return add_residual(x, self.drop_path(ls(f(norm(x)))))
        if place == "post":
            return norm(x + self.drop_path(ls(f(x))))
        return add_residual(x, self.drop_path(ls(post(f(norm(x))))))  # sandwich

    def forward(self, x, *, mask=None, bias=None, is_causal=False, rope=None, cache=None, start=0,
                context=None, context_mask=None, cond=None):
        if self.cfg.adaln != "none":
            if cond is None:
                raise ValueError(f"this block uses adaln={self.cfg.adaln!r}: pass cond (batch, cond_dim)")
            mods = self.modulation(cond)
            if self.cfg.adaln == "adaln_zero":
                shift1, scale1, gate1, shift2, scale2, gate2 = mods
            else:
                (shift1, scale1, shift2, scale2), gate1, gate2 = mods, None, None
        attn = lambda h: self.attn(h, mask=mask, bias=bias, is_causal=is_causal, rope=rope,
                                   cache=cache, start=start)
        if self.cfg.adaln == "none":
            x = self._residual(x, attn, self.norm1, self.norm1_post, self.ls1)
        else:
            h = self.ls1(attn(modulate(self.norm1(x), shift1, scale1)))
            x = x + self.drop_path(h if gate1 is None else gate1[:, None] * h)
        if self.cfg.cross_attn:
            if context is None:
                raise ValueError("this block has cross-attention: pass context (batch, S, context_dim)")
            cmask = None if context_mask is None else context_mask.bool()[:, None, None, :]
            cross = lambda h: self.cross_attn(h, context, mask=cmask)
            x = self._residual(x, cross, self.norm_cross, self.norm_cross_post, nn.Identity())
        if self.cfg.adaln == "none":
            x = self._residual(x, self.mlp, self.norm2, self.norm2_post, self.ls2)
        else:
            h = self.ls2(self.mlp(modulate(self.norm2(x), shift2, scale2)))
            x = x + self.drop_path(h if gate2 is None else gate2[:, None] * h)
        return x


class Transformer(nn.Module):
    """A stack of TransformerBlocks with shared masks and RoPE tables, an optional final norm,
    and a KV cache for incremental decoding.

    forward(x (B, T, dim), positions=None, key_padding=None, cache=None, start=0, ...)
      positions: RoPE positions, (T,) / (B, T) for 1d, (T, 2) / (B, T, 2) for 2d
                 (default: start + arange(T) for 1d).
      key_padding: (B, S) True for real tokens (S = start + T with a cache).
    """

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(TransformerBlock(cfg, r) for r in rates)
        use_final = cfg.final_norm and cfg.norm_place != "post"
        self.norm = (make_norm(cfg.norm, cfg.embed_dim, eps=cfg.norm_eps, bias=cfg.norm_bias) if use_final
                     else nn.Identity())
        self.rope = RotaryEmbedding(cfg.resolved_head_dim, dims=2 if cfg.rope == "2d" else 1,
                                    theta=cfg.rope_theta) if cfg.rope != "none" else None

    def init_weights(self, std: float = 0.02, residual_scale: bool = True) -> None:
        """GPT-2 initialisation: N(0, std) linears, zero biases, and the projections that write
        into the residual stream scaled by 1/sqrt(2 * depth)."""
        init_linears(self, lambda w: nn.init.normal_(w, std=std))
        if residual_scale:
            for blk in self.blocks:
                for lin in (blk.attn.proj, blk.mlp.fc2):
                    nn.init.normal_(lin.weight, std=std / math.sqrt(2 * max(self.cfg.depth, 1)))

    def make_cache(self, batch: int, max_len: int, *, dtype=None, device=None) -> list[KVCache]:
        return [blk.attn.make_cache(batch, max_len, dtype=dtype, device=device) for blk in self.blocks]

    def forward(self, x, *, positions=None, key_padding=None, attn_mask=None, bias=None,
                cache: list[KVCache] | None = None, start: int = 0, context=None, context_mask=None,
                cond=None, return_hidden: bool = False):
        cfg = self.cfg
        if x.ndim != 3 or x.shape[-1] != cfg.embed_dim:
            raise ValueError(f"Transformer expects (batch, seq, {cfg.embed_dim}), got {tuple(x.shape)}")
        T = x.shape[1]
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"cache has {len(cache)} layers, the stack has {len(self.blocks)}")
        S = start + T if cache is not None else T
        q_offset = start if cache is not None else 0
        # SDPA's built-in causal mask needs square attention with nothing else to mask.
        fast_causal = cfg.causal and cfg.window is None and key_padding is None and attn_mask is None and T == S
        mask = attn_mask
        if mask is None and not fast_causal:
            decode_step = cfg.causal and T == 1 and cfg.window is None  # one new query sees every cached key
            if not decode_step or key_padding is not None:
                mask = make_attn_mask(T, S, causal=cfg.causal and not decode_step, window=cfg.window,
                                      q_offset=q_offset, key_padding=key_padding, device=x.device)
        rope = None
        if self.rope is not None:
            if positions is None:
                if cfg.rope == "2d":
                    raise ValueError("rope='2d' needs positions (T, 2) of (row, col)")
                positions = torch.arange(q_offset, q_offset + T, device=x.device)
            rope = self.rope(positions)
        hidden = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask=mask, bias=bias, is_causal=fast_causal, rope=rope,
                    cache=cache[i] if cache is not None else None, start=start,
                    context=context, context_mask=context_mask, cond=cond)
            if return_hidden:
                hidden.append(x)
        x = self.norm(x)
        return (x, hidden) if return_hidden else x
