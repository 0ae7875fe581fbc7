"""Input embeddings: patch embeddings (the plain stride-p conv and the small-data stems) and
the diffusion timestep embedding.

Every patch embedding maps images (B, C, H, W) to tokens (B, h*w, dim) on an (H/p, W/p) grid
and has the same interface (`forward` -> (tokens, grid), `forward_map` -> (B, dim, h, w) map,
`check_input`, `grid_size`, `num_patches`, `proj`), so an encoder swaps one for another with a
config string (`make_patch_embed(stem, ...)`):

- `patch`: one stride-p convolution (ViT; timm's and torchvision's layout).
- `conv`: early convolutions (Xiao et al., 2021, "Early Convolutions Help Transformers See
  Better"): a 3x3 stride-1 conv, then log2(p) 3x3 stride-2 convs, each with BatchNorm and ReLU,
  widths doubling up to `stem_width`, then a 1x1 conv to dim.
- `cct`: the compact convolutional transformer's tokenizer (Hassani et al., 2021): log2(p)
  times (3x3 conv, ReLU, 3x3 stride-2 max-pool); overlapping, no norm.
- `spt`: shifted patch tokenization (Lee et al., 2021): the image and its four diagonal shifts
  by half a patch, concatenated on channels, cut into patches, LayerNorm, linear.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

STEMS = ("patch", "conv", "cct", "spt")

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

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> (B, dim, h, w), unchecked (call check_input first)."""
        return self.proj(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        self.check_input(x)
        x = self.forward_map(x)  # (B, dim, h, w)
        grid = (x.shape[2], x.shape[3])
        # (B, h*w, dim), made contiguous once here: as a transposed view it would make every
        # later op on the token stream (the norms, each block's residual) run strided or copy
        return self.norm(rearrange(x, "b c h w -> b (h w) c").contiguous()), grid


def _halvings(patch_size) -> int:
    """log2 of a square power-of-two patch (the stride-2 layers a conv stem needs)."""
    p = _pair(patch_size)
    if p[0] != p[1] or p[0] < 1 or p[0] & (p[0] - 1):
        raise ValueError(f"conv / cct stems need a square power-of-two patch_size, got {patch_size}")
    return int(math.log2(p[0]))


class ConvStem(PatchEmbed):
    """Early convolutions: conv3x3-BN-ReLU at stride 1, then log2(p) at stride 2 (widths
    stem_width / 2^k ... stem_width), then a 1x1 conv `proj` to dim (with bias)."""

    def __init__(self, img_size=32, patch_size=4, in_chans: int = 3, dim: int = 192, *, stem_width: int = 64,
                 dynamic_img_size: bool = False, norm: nn.Module | None = None):
        super().__init__(img_size, patch_size, in_chans, dim, dynamic_img_size=dynamic_img_size, norm=norm)
        n = _halvings(patch_size)
        widths = [max(stem_width // 2 ** (n - i), 8) for i in range(n + 1)]  # stride 1, then n stride-2
        layers, c = [], in_chans
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, dim, 1)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x))  # (B, C, H, W) -> (B, w, h, w) -> (B, dim, h, w)


class CCTTokenizer(PatchEmbed):
    """CCT's tokenizer: log2(p) x (conv3x3 -> ReLU -> max-pool 3x3 stride 2); the last conv
    (`proj`) outputs dim, the earlier ones stem_width."""

    def __init__(self, img_size=32, patch_size=4, in_chans: int = 3, dim: int = 192, *, stem_width: int = 64,
                 dynamic_img_size: bool = False, norm: nn.Module | None = None):
        super().__init__(img_size, patch_size, in_chans, dim, dynamic_img_size=dynamic_img_size, norm=norm)
        n = _halvings(patch_size)
        if n < 1:
            raise ValueError("the cct stem needs patch_size >= 2 (one conv + max-pool per halving)")
        layers, c = [], in_chans
        for _ in range(n - 1):
            layers += [nn.Conv2d(c, stem_width, 3, 1, 1, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
            c = stem_width
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c, dim, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.proj(self.convs(x))))  # (B, dim, H / p, W / p)


class ShiftedPatchEmbed(PatchEmbed):
    """Shifted patch tokenization: [x, x shifted by (+-p/2, +-p/2)] (B, 5C, H, W) -> patches
    (B, h*w, 5C*p*p) -> LayerNorm -> Linear `proj` to dim. Shifts pad with zeros."""

    def __init__(self, img_size=32, patch_size=4, in_chans: int = 3, dim: int = 192, *,
                 dynamic_img_size: bool = False, norm: nn.Module | None = None):
        super().__init__(img_size, patch_size, in_chans, dim, dynamic_img_size=dynamic_img_size, norm=norm)
        ph, pw = self.patch_size
        n = 5 * in_chans * ph * pw
        self.patch_norm = nn.LayerNorm(n, eps=1e-6)
        self.proj = nn.Linear(n, dim)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        sh, sw = ph // 2, pw // 2
        H, W = x.shape[-2:]
        xp = F.pad(x, (sw, sw, sh, sh))  # (B, C, H + 2sh, W + 2sw)
        shifts = [xp[..., dy:dy + H, dx:dx + W] for dy, dx in ((0, 0), (2 * sh, 2 * sw), (0, 2 * sw), (2 * sh, 0))]
        x = torch.cat([x] + shifts, dim=1)  # (B, 5C, H, W): the image, then its four diagonal shifts
        h, w = H // ph, W // pw
        x = rearrange(x, "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=ph, p2=pw)  # (B, h, w, 5C*p*p)
        x = self.proj(self.patch_norm(x))  # (B, h, w, dim)
        return rearrange(x, "b h w d -> b d h w")


def make_patch_embed(stem: str, img_size=32, patch_size=4, in_chans: int = 3, dim: int = 192, *,
                     stem_width: int = 64, bias: bool = True, dynamic_img_size: bool = False,
                     norm: nn.Module | None = None) -> PatchEmbed:
    """The patch embedding named by `stem` (one of STEMS; see the module docstring)."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    kw = dict(dynamic_img_size=dynamic_img_size, norm=norm)
    if stem == "patch":
        return PatchEmbed(img_size, patch_size, in_chans, dim, bias=bias, **kw)
    if stem == "conv":
        return ConvStem(img_size, patch_size, in_chans, dim, stem_width=stem_width, **kw)
    if stem == "cct":
        return CCTTokenizer(img_size, patch_size, in_chans, dim, stem_width=stem_width, **kw)
    return ShiftedPatchEmbed(img_size, patch_size, in_chans, dim, **kw)


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


def _digits(ids: torch.Tensor, factors: tuple[int, ...]) -> list[torch.Tensor]:
    """Mixed-radix digits of ids = ((d_0 * f_1 + d_1) * f_2 + d_2) ..., most significant first."""
    out = []
    for f in reversed(factors):
        out.append(ids % f)
        ids = ids // f
    return out[::-1]


class FactorisedEmbedding(nn.Module):
    """Embedding of ids that are tuples of codes (a factorised tokenizer's (silhouette, colour)):
    id = mixed-radix number of its digits over `factors`, embedding = the sum of one table per
    digit. Tokens that share a digit share that part of their embedding, so what is learnt of
    one colour's circle edge carries to the others. Vocabulary: prod(factors)."""

    def __init__(self, factors, dim: int):
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) < 1 or min(self.factors) < 1:
            raise ValueError(f"factors must be positive sizes, got {factors}")
        self.num_embeddings = math.prod(self.factors)
        self.tables = nn.ModuleList(nn.Embedding(f, dim) for f in self.factors)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return sum(t(d) for t, d in zip(self.tables, _digits(ids, self.factors)))


class FactorisedHead(nn.Module):
    """Output head over a factorised vocabulary: one linear map per factor, joint logits
    logit(d_0, d_1, ..) = sum_j logit_j(d_j), flattened in the ids' mixed-radix order
    (B, T, prod(factors)). A softmax over them is the product of one softmax per factor (the
    digits independent given the hidden state), and the joint cross-entropy is the sum of the
    per-digit ones; samplers, guidance and top-k read the joint logits unchanged."""

    def __init__(self, dim: int, factors):
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        if len(self.factors) < 1 or min(self.factors) < 1:
            raise ValueError(f"factors must be positive sizes, got {factors}")
        self.out_features = math.prod(self.factors)
        self.heads = nn.ModuleList(nn.Linear(dim, f, bias=False) for f in self.factors)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = None
        for head in self.heads:
            part = head(h)  # (..., f_j)
            logits = part if logits is None else (logits[..., :, None] + part[..., None, :]).flatten(-2)
        return logits
