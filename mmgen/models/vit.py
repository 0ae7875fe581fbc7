"""Vision Transformer (Dosovitskiy et al., 2021) from the shared blocks, with timm's API.

Conv patch embedding -> [cls] [registers] patches (+ learned / 2D sincos positions, or 2D RoPE
inside attention) -> shared `Transformer` (pre-norm, fused SDPA, layer scale, drop path) ->
token / mean pooling -> linear head.

timm-style API: `forward_features`, `forward_head(x, pre_logits=...)`, `forward_intermediates`,
`num_features`, `reset_classifier`. Converters load timm's `VisionTransformer` and torchvision's
`vit_b_16` state dicts (`ViT.from_timm`, `ViT.from_torchvision`; the key converters live in
mmgen.models.convert).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import (STEMS, Transformer, TransformerConfig, grid_positions, init_linears, make_norm,
                      make_patch_embed, sincos_2d)
from ..layers.attention import ATTN_IMPLS
from ..layers.features import take_indices
from ..layers.mlp import MLPS
from ..registry import register_model, register_preset
from ._classify import AUGMENTS, ImageClassifier

GLOBAL_POOLS = ("token", "avg", "seq", "none")
POS_KINDS = ("learned", "sincos", "rope", "none")


@dataclass
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000  # 0 = no head (forward returns pooled features)
    global_pool: str = "token"  # token | avg | seq (CCT's attention-weighted mean) | none (head on every token)
    class_token: bool = True
    reg_tokens: int = 0  # register tokens (Darcet et al., 2023)
    pos: str = "learned"  # learned | sincos (2D, fixed) | rope (2D, in attention) | none
    pos_embed_prefix: bool = True  # learned table also covers cls/register tokens (timm default, torchvision)
    dynamic_img_size: bool = False  # accept any size divisible by the patch; positions are interpolated
    patch_bias: bool = True
    stem: str = "patch"  # patch (one stride-p conv) | conv (early convs + BN) | cct (conv-ReLU-maxpool) | spt (shifted patches)
    stem_width: int = 64  # channels of the conv / cct stems' last hidden conv
    norm_pre: bool = False  # a norm before the blocks (CLIP's ln_pre)
    fc_norm: bool | None = None  # norm after pooling instead of before; None = on for avg pooling (timm)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp: str = "gelu"
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    norm_eps: float = 1e-6  # timm's and torchvision's ViT LayerNorm eps
    layer_scale: float | None = None
    drop_path: float = 0.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    pos_dropout: float = 0.0
    head_dropout: float = 0.0
    rope_theta: float = 100.0  # 2D RoPE over a small grid wants a low base
    attn_impl: str = "sdpa"
    label_smoothing: float = 0.0
    augment: str = "none"  # none | flip | crop | crop_flip (training batches only)

    def __post_init__(self):
        for name, value, allowed in (("global_pool", self.global_pool, GLOBAL_POOLS), ("pos", self.pos, POS_KINDS),
                                     ("mlp", self.mlp, MLPS), ("attn_impl", self.attn_impl, ATTN_IMPLS),
                                     ("augment", self.augment, AUGMENTS), ("stem", self.stem, STEMS)):
            if value not in allowed:
                raise ValueError(f"ViTConfig.{name} must be one of {allowed}, got {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; or use global_pool='avg'")
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.pos == "sincos" and self.embed_dim % 4:
            raise ValueError(f"pos='sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.pos == "rope" and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"pos='rope' (2D) needs a head dim divisible by 4, got {self.embed_dim // self.num_heads}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, mlp=self.mlp, mlp_ratio=self.mlp_ratio,
            norm="layernorm", norm_eps=self.norm_eps, final_norm=not self.use_fc_norm, qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm, rope="2d" if self.pos == "rope" else "none", rope_theta=self.rope_theta,
            dropout=self.dropout, attn_dropout=self.attn_dropout, drop_path=self.drop_path,
            layer_scale=self.layer_scale, attn_impl=self.attn_impl)


def resample_pos_embed(posemb: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int = 0) -> torch.Tensor:
    """Bicubic (antialiased) resize of a learned table (1, P + h*w, D) to a new patch grid,
    leaving the P prefix-token rows untouched (timm's `resample_abs_pos_embed`)."""
    if tuple(new_grid) == tuple(old_grid):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    grid = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)


@register_model("vit")
class ViT(ImageClassifier):
    config_class = ViTConfig

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        c = config
        self.num_prefix_tokens = c.num_prefix_tokens
        self.num_features = self.embed_dim = c.embed_dim
        self.patch_embed = make_patch_embed(c.stem, c.img_size, c.patch_size, c.in_chans, c.embed_dim, bias=c.patch_bias,
                                            stem_width=c.stem_width, dynamic_img_size=c.dynamic_img_size)
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, c.embed_dim)) if c.reg_tokens else None
        if c.pos == "learned":
            n = self.patch_embed.num_patches + (self.num_prefix_tokens if c.pos_embed_prefix else 0)
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.embed_dim))
        else:
            self.pos_embed = None
        self._sincos_cache: dict = {}
        self.pos_drop = nn.Dropout(c.pos_dropout)
        self.norm_pre = make_norm("layernorm", c.embed_dim, eps=c.norm_eps) if c.norm_pre else nn.Identity()
        self.encoder = Transformer(c.transformer_config())
        self.fc_norm = make_norm("layernorm", c.embed_dim, eps=c.norm_eps) if c.use_fc_norm else nn.Identity()
        self.seq_pool = nn.Linear(c.embed_dim, 1) if c.global_pool == "seq" else None  # CCT's sequence pooling
        self.head_drop = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.init_weights()

    # ----------------------------------------------------------------------------- init
    def init_weights(self) -> None:
        """timm's default ViT init: truncated normal(0.02) linears and positions, tiny cls/registers."""
        init_linears(self, lambda w: nn.init.trunc_normal_(w, std=0.02), skip=())
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for tok in (self.cls_token, self.reg_token):
            if tok is not None:
                nn.init.normal_(tok, std=1e-6)

    # ------------------------------------------------------------------------ embedding
    def _sincos(self, grid: tuple[int, int], device, dtype) -> torch.Tensor:
        key = (grid, device, dtype)
        if key not in self._sincos_cache:
            self._sincos_cache[key] = sincos_2d(*grid, self.config.embed_dim).to(device, dtype)[None]  # (1, h*w, D)
        return self._sincos_cache[key]

    def _rope_positions(self, grid: tuple[int, int], device) -> torch.Tensor:
        """(P + h*w, 2) (row, col): prefix tokens sit at (0, 0), i.e. a zero rotation (no RoPE)."""
        pos = grid_positions(*grid, device=device)
        return torch.cat([pos.new_zeros(self.num_prefix_tokens, 2), pos], dim=0)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images (B, C, H, W) -> tokens (B, P + h*w, D) with positions added, and the grid (h, w)."""
        c = self.config
        x, grid = self.patch_embed(x)  # (B, h*w, D)
        # the residual stream stays in the parameter dtype (float32 under bf16 autocast, as timm)
        x = x.to(self.patch_embed.proj.weight.dtype)
        B = x.shape[0]
        prefix = [t.expand(B, -1, -1).to(x.dtype) for t in (self.cls_token, self.reg_token) if t is not None]
        if c.pos == "learned":
            P = self.num_prefix_tokens if c.pos_embed_prefix else 0
            pos = resample_pos_embed(self.pos_embed, grid, self.grid_size, P).to(x.dtype)
            if c.pos_embed_prefix:
                x = torch.cat(prefix + [x], dim=1) + pos
            else:
                x = torch.cat(prefix + [x + pos], dim=1)
        else:
            if c.pos == "sincos":
                x = x + self._sincos(grid, x.device, x.dtype)
            x = torch.cat(prefix + [x], dim=1)
        return self.norm_pre(self.pos_drop(x)), grid

    # ---------------------------------------------------------------------- timm API
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens (B, P + h*w, D) (prefix tokens first)."""
        x, grid = self._embed(x)
        positions = self._rope_positions(grid, x.device) if self.config.pos == "rope" else None
        return self.encoder(x, positions=positions)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        pool_type = self.config.global_pool if pool_type is None else pool_type
        if pool_type == "token":
            return x[:, 0]
        if pool_type == "avg":
            return x[:, self.num_prefix_tokens:].mean(dim=1)
        if pool_type == "seq":
            x = x[:, self.num_prefix_tokens:]  # (B, h*w, D)
            w = self.seq_pool(x).float().softmax(dim=1).to(x.dtype)  # (B, h*w, 1): a weight per token
            return (w * x).sum(dim=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> pooled features (B, D) with pre_logits, else logits (B, num_classes)."""
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, *,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Per-block outputs, timm's signature. indices: None = every block, k = the last k, or a
        list. output_fmt 'NCHW' gives (B, D, h, w) maps (prefix tokens split off; with
        return_prefix_tokens each item is (map, prefix (B, P, D))), 'NLC' gives (B, h*w, D).
        norm applies the final norm to each. Returns (final tokens, list) or the list alone."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = take_indices(self.config.depth, indices)
        B = x.shape[0]
        x, grid = self._embed(x)
        rope = None
        if self.config.pos == "rope":
            rope = self.encoder.rope(self._rope_positions(grid, x.device))
        blocks = self.encoder.blocks[:max(take) + 1] if stop_early and take else self.encoder.blocks
        feats = []
        for i, blk in enumerate(blocks):
            x = blk(x, rope=rope)
            if i in take:
                feats.append(self.encoder.norm(x) if norm else x)
        P = self.num_prefix_tokens
        prefix = [f[:, :P] for f in feats]
        feats = [f[:, P:] for f in feats]
        if output_fmt == "NCHW":
            feats = [rearrange(f, "b (h w) d -> b d h w", h=grid[0], w=grid[1]).contiguous() for f in feats]
        if return_prefix_tokens and P:
            feats = list(zip(feats, prefix))
        if intermediates_only:
            return feats
        return self.encoder.norm(x), feats

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (randomly initialised) head of num_classes outputs (0 = none); optionally a new pooling."""
        pool = self.config.global_pool if global_pool is None else global_pool
        # keep the norm placement the model was built with
        self.config = dataclasses.replace(self.config, num_classes=num_classes, global_pool=pool,
                                          fc_norm=self.config.use_fc_norm)
        dev = self.patch_embed.proj.weight.device
        if pool == "seq" and self.seq_pool is None:
            self.seq_pool = nn.Linear(self.config.embed_dim, 1, device=dev)
        self.head = nn.Linear(self.config.embed_dim, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ other libraries
    def load_timm_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        from .convert import convert_timm_vit
        self.load_state_dict(convert_timm_vit(state_dict), strict=True)

    def load_torchvision_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        from .convert import convert_torchvision_vit
        self.load_state_dict(convert_torchvision_vit(state_dict, self.config.depth), strict=True)

    @classmethod
    def from_timm(cls, model: nn.Module, **overrides) -> "ViT":
        """Build a ViT with the shape of a timm `VisionTransformer` and load its weights."""
        from .convert import vit_config_from_timm
        vit = cls(ViTConfig(**{**vit_config_from_timm(model), **overrides}))
        vit.load_timm_state_dict(model.state_dict())
        return vit

    @classmethod
    def from_torchvision(cls, model: nn.Module, **overrides) -> "ViT":
        """Build a ViT with the shape of a torchvision `VisionTransformer` (vit_b_16, ...) and load it."""
        from .convert import vit_config_from_torchvision
        vit = cls(ViTConfig(**{**vit_config_from_torchvision(model), **overrides}))
        vit.load_torchvision_state_dict(model.state_dict())
        return vit


# --------------------------------------------------------------------------------- presets
register_preset("vit_tiny_patch4_32", ViT, "ViT for 32 px images, patch 4, 4 blocks of width 128 (~0.8M)",
                img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=4, num_heads=4)
register_preset("vit_tiny", ViT, "alias of vit_tiny_patch4_32",
                img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=4, num_heads=4)
register_preset("vit_small_patch4_32", ViT, "ViT for 32 px images, patch 4, 6 blocks of width 192 (~2.7M)",
                img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=6, num_heads=3)
register_preset("vit_base_patch16_224", ViT, "ViT-B/16 at 224 px (timm vit_base_patch16_224 / torchvision vit_b_16)",
                img_size=224, patch_size=16, num_classes=1000, embed_dim=768, depth=12, num_heads=12)
register_preset("vit_tiny_conv_patch4_32", ViT, "vit_tiny_patch4_32 with an early-convolution stem (3x3 convs + BN "
                "down to the 8x8 grid) and mean pooling: the small-data hybrid (~0.84M)",
                img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=4, num_heads=4, stem="conv",
                global_pool="avg")
register_preset("vit_tiny_cct_patch4_32", ViT, "vit_tiny_patch4_32 with CCT's tokenizer (2 x conv 3x3 + ReLU + "
                "max-pool) and sequence pooling, no cls token: the small-data hybrid that trains best here (~0.88M)",
                img_size=32, patch_size=4, num_classes=10, embed_dim=128, depth=4, num_heads=4, stem="cct",
                global_pool="seq", class_token=False)
register_preset("vit_cct7_3x1_32", ViT, "CCT-7/3x1 (Hassani et al., 2021) for 32 px: one 3x3 conv + max-pool "
                "tokenizer (16x16 tokens), 7 blocks of width 256, MLP ratio 2, sequence pooling (~3.7M)",
                img_size=32, patch_size=2, num_classes=10, stem="cct", embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0,
                global_pool="seq", class_token=False, attn_dropout=0.1, drop_path=0.1)
