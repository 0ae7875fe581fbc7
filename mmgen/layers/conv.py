"""Convolutional building blocks shared by the VAE, the VQ tokenizer and the DDPM UNet.

All blocks take and return images/feature maps (B, C, H, W).

- `group_norm(ch, groups=32)`: GroupNorm with the largest group count <= `groups` that
  divides `ch` (so 48 channels get 16 groups, 8 channels 8 groups, ...).
- `ResBlock(in_ch, out_ch, *, emb_dim=None, dropout=0.0, groups=32, emb_mode="add")`:
  norm -> SiLU -> conv3x3 -> [+ embedding] -> norm -> SiLU -> dropout -> conv3x3, plus a
  1x1 skip when in_ch != out_ch. With `emb_dim` it takes a per-sample vector `emb`
  (B, emb_dim) (a diffusion timestep / class embedding): projected and added after the
  first conv (`emb_mode="add"`, DDPM) or used as a FiLM scale/shift on the second norm
  (`emb_mode="scale_shift"`, improved DDPM / ADM). The last conv is zero-initialised
  when `zero_init=True`, so a fresh block is the identity (plus skip).
- `Downsample(ch, *, out_ch=None, conv=True)`: halve H and W with a stride-2 3x3 conv
  (or average pooling when conv=False).
- `Upsample(ch, *, out_ch=None, conv=True)`: double H and W (nearest) then a 3x3 conv.
- `AttnBlock(ch, *, num_heads=1, groups=32)`: self-attention over the H*W positions of a
  (low-resolution) feature map with mmgen.layers.Attention, pre-GroupNorm, residual.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention

EMB_MODES = ("add", "scale_shift")


def num_groups(ch: int, groups: int = 32) -> int:
    """Largest g <= groups that divides ch."""
    if ch < 1:
        raise ValueError(f"channel count must be >= 1, got {ch}")
    g = min(groups, ch)
    while ch % g:
        g -= 1
    return g


def group_norm(ch: int, groups: int = 32, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm over `ch` channels with min(groups, ch) groups, lowered until it divides ch."""
    return nn.GroupNorm(num_groups(ch, groups), ch, eps=eps)


class ResBlock(nn.Module):
    """Pre-activation residual block with GroupNorm and an optional embedding input.

    forward(x (B, in_ch, H, W), emb (B, emb_dim) or None) -> (B, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, *, emb_dim: int | None = None,
                 dropout: float = 0.0, groups: int = 32, emb_mode: str = "add", eps: float = 1e-6,
                 zero_init: bool = False):
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        if emb_mode not in EMB_MODES:
            raise ValueError(f"emb_mode must be one of {EMB_MODES}, got {emb_mode!r}")
        self.in_ch, self.out_ch, self.emb_dim, self.emb_mode = in_ch, out_ch, emb_dim, emb_mode
        self.norm1 = group_norm(in_ch, groups, eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if emb_dim is not None:
            self.emb_proj = nn.Linear(emb_dim, out_ch * (2 if emb_mode == "scale_shift" else 1))
        self.norm2 = group_norm(out_ch, groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"ResBlock expects (B, {self.in_ch}, H, W), got {tuple(x.shape)}")
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        if self.emb_dim is not None:
            if emb is None:
                raise ValueError(f"this ResBlock was built with emb_dim={self.emb_dim}: pass emb (B, {self.emb_dim})")
            e = self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, out_ch or 2*out_ch, 1, 1)
            if self.emb_mode == "add":
                h = self.norm2(h + e)
            else:
                scale, shift = e.chunk(2, dim=1)
                h = self.norm2(h) * (1 + scale) + shift
        else:
            if emb is not None:
                raise ValueError("this ResBlock has no embedding input (emb_dim=None) but got emb")
            h = self.norm2(h)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h

    def extra_repr(self) -> str:
        return f"{self.in_ch} -> {self.out_ch}, emb_dim={self.emb_dim}, emb_mode={self.emb_mode}"


class Downsample(nn.Module):
    """(B, ch, H, W) -> (B, out_ch, H/2, W/2): stride-2 3x3 conv, or 2x2 average pooling."""

    def __init__(self, ch: int, *, out_ch: int | None = None, conv: bool = True):
        super().__init__()
        out_ch = ch if out_ch is None else out_ch
        if not conv and out_ch != ch:
            raise ValueError("Downsample with conv=False cannot change the channel count; set conv=True")
        self.op = nn.Conv2d(ch, out_ch, 3, stride=2, padding=1) if conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"Downsample needs even H and W, got {tuple(x.shape[-2:])}")
        return self.op(x)


class Upsample(nn.Module):
    """(B, ch, H, W) -> (B, out_ch, 2H, 2W): nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, ch: int, *, out_ch: int | None = None, conv: bool = True):
        super().__init__()
        out_ch = ch if out_ch is None else out_ch
        if not conv and out_ch != ch:
            raise ValueError("Upsample with conv=False cannot change the channel count; set conv=True")
        self.conv = nn.Conv2d(ch, out_ch, 3, padding=1) if conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Residual self-attention over the positions of a feature map (B, ch, H, W), with a
    GroupNorm in front; the output projection is zero-initialised so it starts as identity."""

    def __init__(self, ch: int, *, num_heads: int = 1, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm = group_norm(ch, groups, eps)
        self.attn = Attention(ch, num_heads)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, H*W, C)
        h = self.attn(h)
        return x + rearrange(h, "b (h w) c -> b c h w", h=H, w=W)
