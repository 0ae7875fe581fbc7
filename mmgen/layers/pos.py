"""Position encodings: learned absolute, sinusoidal 1D/2D, and rotary (RoPE) 1D/2D."""
from __future__ import annotations

import math

import torch
from torch import nn

ROPES = ("none", "1d", "2d")


def sincos_1d(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids: positions (...,) -> (..., dim) as [sin | cos]."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    freqs = theta ** (-torch.arange(0, dim // 2, dtype=torch.float64, device=positions.device) / (dim // 2))
    angles = positions.to(torch.float64)[..., None] * freqs  # (..., dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def sincos_2d(grid_h: int, grid_w: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """MAE-style 2D sincos table (grid_h * grid_w, dim): half the channels encode the
    column, half the row (MAE's `get_2d_sincos_pos_embed` order)."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal embedding dim must be divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(xs.flatten(), dim // 2, theta), sincos_1d(ys.flatten(), dim // 2, theta)], dim=-1)


class LearnedPositions(nn.Module):
    """A learned table of `max_len` absolute positions, added to the input."""

    def __init__(self, max_len: int, dim: int, *, std: float = 0.02):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * std)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = x.shape[1]
        if start + T > self.max_len:
            raise ValueError(
                f"sequence of {start + T} positions exceeds the position table (max_len={self.max_len})")
        return x + self.weight[start:start + T].to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al.) in the rotate-half layout used by GPT-NeoX and HF LLaMA.

    dims=1: positions (T,) or (B, T) of token indices.
    dims=2: axial RoPE for image patches; positions (T, 2) or (B, T, 2) of (row, col);
            the first half of each head's channels rotates with the row, the second with
            the column.
    Returns (cos, sin), each (T, head_dim) or (B, 1, T, head_dim), ready for `apply_rope`.
    """

    def __init__(self, head_dim: int, *, dims: int = 1, theta: float = 10000.0):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"RoPE dims must be 1 or 2, got {dims}")
        rot = head_dim // dims  # channels rotated per axis
        if rot % 2:
            raise ValueError(f"RoPE with dims={dims} needs head_dim divisible by {2 * dims}, got {head_dim}")
        self.head_dim, self.dims = head_dim, dims
        inv_freq = 1.0 / theta ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = positions.to(self.inv_freq.device, torch.float32)
        if self.dims == 1:
            angles = pos[..., None] * self.inv_freq  # (..., T, rot/2)
            angles = torch.cat([angles, angles], dim=-1)  # (..., T, D)
        else:
            if pos.shape[-1] != 2:
                raise ValueError(f"2D RoPE wants positions (..., T, 2), got {tuple(pos.shape)}")
            ang = [pos[..., i, None] * self.inv_freq for i in range(2)]  # 2 x (..., T, rot/2)
            angles = torch.cat([ang[0], ang[0], ang[1], ang[1]], dim=-1)  # (..., T, D)
        cos, sin = angles.cos(), angles.sin()
        if cos.ndim == 3:  # batched positions -> broadcast over heads
            cos, sin = cos[:, None], sin[:, None]
        return cos, sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: int = 1) -> torch.Tensor:
    """Rotate q or k (B, H, T, D) by (cos, sin); for 2D RoPE each half rotates on its own."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if dims == 1:
        return x * cos + _rotate_half(x) * sin
    xa, xb = x.chunk(2, dim=-1)
    ca, cb = cos.chunk(2, dim=-1)
    sa, sb = sin.chunk(2, dim=-1)
    return torch.cat([xa * ca + _rotate_half(xa) * sa, xb * cb + _rotate_half(xb) * sb], dim=-1)


def grid_positions(grid_h: int, grid_w: int, device=None) -> torch.Tensor:
    """(grid_h * grid_w, 2) integer (row, col) coordinates in raster order."""
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij")
    return torch.stack([ys.flatten(), xs.flatten()], dim=-1)


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) diffusion timesteps, (B,) -> (B, dim),
    in the [cos | sin] order of DiT / guided-diffusion."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
