"""The convolutional encoder/decoder pair shared by the Gaussian VAE (vae.py) and the VQ
tokenizer (vq.py), their common config fields, and image helpers (input checks, PSNR).
Registers no preset itself."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import AttnBlock, Downsample, ResBlock, Transformer, TransformerConfig, Upsample, group_norm
from ..layers.pos import sincos_2d

BOTTLENECKS = ("none", "attn", "transformer")


@dataclass
class ConvAEConfig:
    """Fields shared by VAEConfig and VQConfig. The encoder halves the resolution
    len(ch_mult) - 1 times: img_size 32 with ch_mult (1, 2, 2) gives an 8x8 latent grid."""
    img_size: int = 32
    in_chans: int = 3
    patch: int = 1  # pixel-unshuffle factor before the first conv (and pixel-shuffle after the last):
    #                 patch=2 runs the first level at half resolution, ~4x cheaper on CPU
    ch: int = 32  # width of the first level
    ch_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per level
    num_res_blocks: int = 1  # ResBlocks per level
    groups: int = 32  # GroupNorm groups (lowered to divide the width)
    dropout: float = 0.0
    # at the lowest resolution, after the middle ResBlock: nothing, one AttnBlock, or a
    # stack of mmgen.layers.TransformerBlocks over the h*w positions (2D sincos positions)
    bottleneck: str = "none"  # none | attn | transformer
    bottleneck_depth: int = 2
    bottleneck_heads: int = 4

    def __post_init__(self):
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {self.bottleneck!r}")
        if not self.ch_mult:
            raise ValueError("ch_mult needs at least one level, e.g. (1, 2, 2)")
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")
        factor = self.patch * 2 ** (len(self.ch_mult) - 1)
        if self.img_size % factor:
            raise ValueError(f"img_size {self.img_size} must be divisible by patch * 2**(len(ch_mult)-1) = {factor}; "
                             f"change img_size, patch {self.patch} or ch_mult {self.ch_mult}")
        if self.bottleneck != "none" and (self.ch * self.ch_mult[-1]) % self.bottleneck_heads:
            raise ValueError(f"bottleneck width ch*ch_mult[-1] = {self.ch * self.ch_mult[-1]} must be divisible by "
                             f"bottleneck_heads = {self.bottleneck_heads}")

    @property
    def latent_size(self) -> int:
        return self.img_size // (self.patch * 2 ** (len(self.ch_mult) - 1))


class Bottleneck(nn.Module):
    """Global mixing at the lowest resolution: identity, one AttnBlock, or a Transformer
    (pre-norm blocks from mmgen.layers) over the h*w positions with fixed 2D sincos positions."""

    def __init__(self, cfg: ConvAEConfig, width: int):
        super().__init__()
        self.kind = cfg.bottleneck
        if self.kind == "attn":
            self.block = AttnBlock(width, num_heads=cfg.bottleneck_heads, groups=cfg.groups)
        elif self.kind == "transformer":
            self.block = Transformer(TransformerConfig(embed_dim=width, depth=cfg.bottleneck_depth,
                                                       num_heads=cfg.bottleneck_heads, dropout=cfg.dropout))
            s = cfg.latent_size
            self.register_buffer("pos", sincos_2d(s, s, width) if width % 4 == 0 else torch.zeros(s * s, width),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if self.kind == "attn":
            return self.block(x)
        B, C, H, W = x.shape
        h = rearrange(x, "b c h w -> b (h w) c") + self.pos.to(x.dtype)  # (B, H*W, C)
        h = self.block(h)
        return x + rearrange(h, "b (h w) c -> b c h w", h=H, w=W)  # residual around the stack


class ConvEncoder(nn.Module):
    """(B, in_channels, S, S) -> (B, out_channels, S/f, S/f), f = patch * 2**(len(ch_mult)-1)."""

    def __init__(self, cfg: ConvAEConfig, out_channels: int):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.patch = cfg.patch
        self.conv_in = nn.Conv2d(cfg.in_chans * cfg.patch ** 2, cfg.ch, 3, padding=1)
        blocks: list[nn.Module] = []
        c = cfg.ch
        for i, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, w, dropout=cfg.dropout, groups=cfg.groups))
                c = w
            if i < len(widths) - 1:
                blocks.append(Downsample(c))
        self.down = nn.Sequential(*blocks)
        self.mid1 = ResBlock(c, c, dropout=cfg.dropout, groups=cfg.groups)
        self.bottleneck = Bottleneck(cfg, c)
        self.mid2 = ResBlock(c, c, dropout=cfg.dropout, groups=cfg.groups)
        self.norm_out = group_norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)  # (B, C*p*p, S/p, S/p)
        h = self.down(self.conv_in(x))  # (B, C_last, s, s)
        h = self.mid2(self.bottleneck(self.mid1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDecoder(nn.Module):
    """(B, in_channels, s, s) -> (B, out_channels, s*f, s*f): the encoder mirrored."""

    def __init__(self, cfg: ConvAEConfig, in_channels: int, out_channels: int | None = None):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        c = widths[-1]
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.mid1 = ResBlock(c, c, dropout=cfg.dropout, groups=cfg.groups)
        self.bottleneck = Bottleneck(cfg, c)
        self.mid2 = ResBlock(c, c, dropout=cfg.dropout, groups=cfg.groups)
        blocks: list[nn.Module] = []
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(c, w, dropout=cfg.dropout, groups=cfg.groups))
                c = w
            if i > 0:
                blocks.append(Upsample(c))
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(c, cfg.groups)
        self.patch = cfg.patch
        self.conv_out = nn.Conv2d(c, (out_channels or cfg.in_chans) * cfg.patch ** 2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid2(self.bottleneck(self.mid1(self.conv_in(z))))  # (B, C_last, s, s)
        out = self.conv_out(F.silu(self.norm_out(self.up(h))))  # (B, C*p*p, S/p, S/p)
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


def batch_images(batch) -> torch.Tensor:
    """The image tensor of a batch: a dict with "image" (dataset batches) or a tensor."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise ValueError(f"expected a batch dict with an 'image' entry, got keys {sorted(batch)}")
        return batch["image"]
    if isinstance(batch, torch.Tensor):
        return batch
    raise TypeError(f"expected a batch dict {{'image': (B, C, H, W)}} or an image tensor, got {type(batch).__name__}")


def check_images(x: torch.Tensor, cfg: ConvAEConfig) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected images (B, C, H, W), got {shape}")
    B, C, H, W = x.shape
    if C != cfg.in_chans:
        raise ValueError(f"expected {cfg.in_chans} image channels, got {C} (shape {tuple(x.shape)}); "
                         f"build the model with in_channels={C} for such data")
    if (H, W) != (cfg.img_size, cfg.img_size):
        raise ValueError(f"expected {cfg.img_size}x{cfg.img_size} images, got {H}x{W}; build the model with "
                         f"img_size={H} (or resize the data)")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2, i.e. computed on [0, 1])."""
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def example_images(cfg: ConvAEConfig, batch_size: int, device) -> torch.Tensor:
    """Smooth random images in [-1, 1] (a low-resolution noise field upsampled)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(batch_size, cfg.in_chans, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False).to(device)


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    return nats / (dims * math.log(2.0))
