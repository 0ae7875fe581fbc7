"""Input embeddings: conv patch embedding and diffusion timestep embedding."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .pos import timestep_features


def _pair(x) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else tuple(x)


class PatchEmbed(nn.Module):
    """Image (B, C, H, W) -> patch tokens (B, N, dim) by a stride-p convolution
    (timm's layout: `proj` is the Conv2d). Returns tokens and the (h, w) grid."""

    def __init__(self, img_size=32, patch_size=4, in_chans: int = 3, dim: int = 192, *,
                 bias: bool = True, dynamic_img_size: bool = False, norm: nn.Module | None = None):
        super().__init__()
        self.img_size, self.patch_size = _pair(img_size), _pair(patch_size)
        self.in_chans, self.dynamic_img_size = in_chans, dynamic_img_size
        for s, p in zip(self.img_size, self.patch_size):
            if s % p:
                raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, dim, self.patch_size, self.patch_size, bias=bias)
        self.norm = norm or nn.Identity()

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        B, C, H, W = x.shape
        if C != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {C} (shape {tuple(x.shape)})")
        ph, pw = self.patch_size
        if H < ph or W < pw:
            raise ValueError(f"image {H}x{W} is smaller than one patch {ph}x{pw}")
        if self.dynamic_img_size:
            if H % ph or W % pw:
                raise ValueError(f"image {H}x{W} is not divisible by the patch size {ph}x{pw}")
        elif (H, W) != self.img_size:
            raise ValueError(f"expected images of {self.img_size[0]}x{self.img_size[1]}, got {H}x{W}; "
                             "build the model with dynamic_img_size=True for other sizes")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.check_input(x)
        x = self.proj(x)  # (B, dim, h, w)
        grid = (x.shape[2], x.shape[3])
        return self.norm(rearrange(x, "b c h w -> b (h w) c")), grid


class TimestepEmbedding(nn.Module):
    """Diffusion timestep t (B,) -> sinusoidal features -> MLP -> (B, dim), as in DiT."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t[None]
        return self.mlp(timestep_features(t, self.freq_dim).to(self.mlp[0].weight.dtype))
