"""A small pixel-space diffusion UNet (DDPM / ADM style) from the shared layers.

Residual blocks (`mmgen.layers.ResBlock`, timestep + condition embedding as a FiLM
scale/shift), stride-2 `Downsample` / nearest `Upsample`, skip connections between the
two halves, and at the resolutions in `attn_res` a `SpatialTransformer`: a shared
`TransformerBlock` over the H*W positions with self-attention and, for text conditioning,
cross-attention to the text tokens (Stable Diffusion's layout).

The denoiser is owned by `mmgen.models.ddpm.DDPM` (`denoiser="unet"`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import (Downsample, ResBlock, RotaryEmbedding, TimestepEmbedding, TransformerBlock, TransformerConfig,
                      Upsample, grid_positions)
from ..layers import group_norm


@dataclass
class UNetConfig:
    base_ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2)  # channels per level; a 2x downsample between levels
    num_res_blocks: int = 2  # per level (the decoder has one more, as in DDPM)
    attn_res: tuple[int, ...] = (8,)  # feature-map sizes (pixels) that get attention
    num_heads: int = 4
    groups: int = 32  # GroupNorm groups (lowered to divide the channel count)
    dropout: float = 0.0
    emb_mode: str = "scale_shift"  # add | scale_shift (how ResBlocks take the embedding)
    # 2-D rotary positions in the attention blocks' self-attention: without them attention is
    # blind to where a token sits, and only the convolutions know what lies above what
    attn_rope: bool = False

    def __post_init__(self):
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"UNetConfig.ch_mult must be a non-empty tuple of positive ints, got {self.ch_mult}")
        if self.num_res_blocks < 1:
            raise ValueError(f"UNetConfig.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        for m in self.ch_mult:
            if (self.base_ch * m) % self.num_heads:
                raise ValueError(f"UNet channels {self.base_ch * m} are not divisible by num_heads={self.num_heads}")


class SpatialTransformer(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): GroupNorm, 1x1 in, one TransformerBlock over the H*W
    tokens (self-attention [+ cross-attention to `context`] + MLP), 1x1 out (zero init), residual."""

    def __init__(self, ch: int, num_heads: int, groups: int, context_dim: int | None, rope: bool = False):
        super().__init__()
        self.norm = group_norm(ch, groups)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.block = TransformerBlock(TransformerConfig(embed_dim=ch, depth=1, num_heads=num_heads, mlp="geglu",
                                                        cross_attn=context_dim is not None, context_dim=context_dim,
                                                        rope="2d" if rope else "none"))
        self.rope = RotaryEmbedding(ch // num_heads, dims=2) if rope else None  # no weights: buffers only
        self.proj_out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, context=None, context_mask=None):
        B, C, H, W = x.shape
        h = rearrange(self.proj_in(self.norm(x)), "b c h w -> b (h w) c")  # (B, H*W, C)
        rope = self.rope(grid_positions(H, W, x.device)) if self.rope is not None else None
        h = self.block(h, context=context, context_mask=context_mask, rope=rope)
        return x + self.proj_out(rearrange(h, "b (h w) c -> b c h w", h=H, w=W))


class UNet(nn.Module):
    """forward(x (B, C, H, W), t (B,), cond (B, cond_dim) | None, context (B, S, context_dim)
    | None, context_mask (B, S) | None) -> (B, C, H, W). H and W must be divisible by
    2 ** (len(ch_mult) - 1)."""

    def __init__(self, cfg: UNetConfig, *, img_size: int, in_chans: int, cond_dim: int | None = None,
                 context_dim: int | None = None):
        super().__init__()
        self.cfg, self.in_chans, self.img_size = cfg, in_chans, img_size
        self.levels = len(cfg.ch_mult)
        f = 2 ** (self.levels - 1)
        if img_size % f:
            raise ValueError(f"a UNet with {self.levels} levels needs img_size divisible by {f}, got {img_size}")
        emb = cfg.base_ch * 4
        self.t_embed = TimestepEmbedding(emb, freq_dim=cfg.base_ch)
        self.cond_proj = nn.Linear(cond_dim, emb) if cond_dim else None
        self.context_dim = context_dim
        res_kw = dict(emb_dim=emb, dropout=cfg.dropout, groups=cfg.groups, emb_mode=cfg.emb_mode, zero_init=True)

        def attn(ch):
            return SpatialTransformer(ch, cfg.num_heads, cfg.groups, context_dim, rope=cfg.attn_rope)

        self.conv_in = nn.Conv2d(in_chans, cfg.base_ch, 3, padding=1)
        skips, ch = [cfg.base_ch], cfg.base_ch  # channels of each skip connection
        self.down_blocks = nn.ModuleList()
        for lvl, m in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                layer = nn.ModuleDict({"res": ResBlock(ch, cfg.base_ch * m, **res_kw)})
                ch = cfg.base_ch * m
                layer["attn"] = attn(ch) if self._has_attn(lvl) else nn.Identity()
                self.down_blocks.append(layer)
                skips.append(ch)
            if lvl < self.levels - 1:
                self.down_blocks.append(nn.ModuleDict({"down": Downsample(ch)}))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, **res_kw)
        self.mid_attn = attn(ch)
        self.mid2 = ResBlock(ch, ch, **res_kw)
        self.up_blocks = nn.ModuleList()
        for lvl in reversed(range(self.levels)):
            out = cfg.base_ch * cfg.ch_mult[lvl]
            for i in range(cfg.num_res_blocks + 1):
                layer = nn.ModuleDict({"res": ResBlock(ch + skips.pop(), out, **res_kw)})
                ch = out
                layer["attn"] = attn(ch) if self._has_attn(lvl) else nn.Identity()
                if lvl > 0 and i == cfg.num_res_blocks:
                    layer["up"] = Upsample(ch)
                self.up_blocks.append(layer)
        self.norm_out = group_norm(ch, cfg.groups)
        self.conv_out = nn.Conv2d(ch, in_chans, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _has_attn(self, level: int) -> bool:
        """Attention at the levels whose feature-map size is listed in attn_res."""
        return self.img_size // 2 ** level in self.cfg.attn_res

    def forward(self, x, t, *, cond=None, context=None, context_mask=None):
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"UNet expects (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"UNet built for {self.img_size}x{self.img_size} inputs, got {tuple(x.shape[-2:])}")
        B = x.shape[0]
        emb = self.t_embed(t.expand(B) if t.ndim == 0 else t)  # (B, emb)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this UNet was built with cond_dim: pass cond (B, cond_dim)")
            emb = emb + self.cond_proj(cond)
        if self.context_dim is not None and context is None:
            raise ValueError("this UNet has cross-attention: pass context (B, S, context_dim)")
        ctx = dict(context=context, context_mask=context_mask)
        if x.device.type == "cpu":
            # channels_last on CPU: the same arithmetic, laid out (B, H, W, C), so oneDNN's
            # convolutions skip their layout conversions and the spatial transformer's
            # (B, C, H, W) <-> (B, H*W, C) reshapes are views; every later op keeps the layout
            # (measured on a 2-core CPU: ~10 % off a training step, ~18 % off a sampling forward)
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down_blocks:
            if "down" in layer:
                h = layer["down"](h)
            else:
                h = layer["res"](h, emb)
                h = layer["attn"](h, **ctx) if isinstance(layer["attn"], SpatialTransformer) else h
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), **ctx), emb)
        for layer in self.up_blocks:
            h = layer["res"](torch.cat([h, hs.pop()], dim=1), emb)
            h = layer["attn"](h, **ctx) if isinstance(layer["attn"], SpatialTransformer) else h
            if "up" in layer:
                h = layer["up"](h)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()  # (B, C, H, W), the usual layout again

