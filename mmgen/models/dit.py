"""DiT (Peebles & Xie, 2023): a diffusion denoiser made of the shared transformer blocks.

Patchify with `PatchEmbed`, fixed 2D sincos positions, `Transformer` blocks with adaLN-Zero
modulation by the timestep (+ class / pooled-text) vector and, for text conditioning,
cross-attention to the text tokens; a final adaLN layer and a zero-initialised linear map
each token back to a patch. Works on pixels or on VAE latents (any `in_chans`).

The denoiser itself is not a registered family: `mmgen.models.ddpm.DDPM` owns it (choose it
with `denoiser="dit"`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..layers import AdaLNModulation, PatchEmbed, TimestepEmbedding, Transformer, TransformerConfig, modulate
from ..layers import init_linears, make_norm, sincos_2d


@dataclass
class DiTConfig:
    patch_size: int = 2
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    mlp: str = "gelu_tanh"
    qk_norm: bool = False
    learn_sigma: bool = False  # kept False: the schedulers here use fixed variances

    def __post_init__(self):
        if self.patch_size < 1:
            raise ValueError(f"DiTConfig.patch_size must be >= 1, got {self.patch_size}")
        if self.embed_dim % 4:
            raise ValueError(f"DiTConfig.embed_dim must be divisible by 4 (2D sincos positions), got {self.embed_dim}")
        if self.learn_sigma:
            raise ValueError("DiTConfig.learn_sigma=True is not supported: the samplers use fixed variances")


class DiT(nn.Module):
    """forward(x (B, C, H, W), t (B,), cond (B, cond_dim) | None, context (B, S, context_dim)
    | None, context_mask (B, S) | None) -> (B, C, H, W)."""

    def __init__(self, cfg: DiTConfig, *, img_size: int, in_chans: int, cond_dim: int | None = None,
                 context_dim: int | None = None):
        super().__init__()
        self.cfg, self.in_chans, self.img_size = cfg, in_chans, img_size
        d = cfg.embed_dim
        self.patch = PatchEmbed(img_size, cfg.patch_size, in_chans, d)
        gh, gw = self.patch.grid_size
        self.register_buffer("pos", sincos_2d(gh, gw, d)[None], persistent=False)  # (1, N, d)
        self.t_embed = TimestepEmbedding(d)
        self.cond_proj = nn.Linear(cond_dim, d) if cond_dim else None
        self.blocks = Transformer(TransformerConfig(
            embed_dim=d, depth=cfg.depth, num_heads=cfg.num_heads, mlp=cfg.mlp, mlp_ratio=cfg.mlp_ratio,
            qk_norm=cfg.qk_norm, adaln="adaln_zero", cond_dim=d, final_norm=False,
            cross_attn=context_dim is not None, context_dim=context_dim))
        self.final_norm = make_norm("layernorm", d, eps=1e-6, affine=False)
        self.final_mod = AdaLNModulation(d, d, 2, zero_init=True)
        self.final = nn.Linear(d, cfg.patch_size ** 2 * in_chans)
        self._init()

    def _init(self):
        # DiT's initialisation: xavier linears, zero adaLN (done by AdaLNModulation), zero output.
        init_linears(self.blocks, nn.init.xavier_uniform_)
        w = self.patch.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def forward(self, x, t, *, cond=None, context=None, context_mask=None):
        B, C, H, W = x.shape
        tokens, (gh, gw) = self.patch(x)  # (B, N, d)
        tokens = tokens + self.pos.to(tokens.dtype)
        c = self.t_embed(t.expand(B) if t.ndim == 0 else t)  # (B, d)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this DiT was built with cond_dim: pass cond (B, cond_dim)")
            c = c + self.cond_proj(cond)
        tokens = self.blocks(tokens, cond=c, context=context, context_mask=context_mask)
        shift, scale = self.final_mod(c)
        out = self.final(modulate(self.final_norm(tokens), shift, scale))  # (B, N, p*p*C)
        p = self.cfg.patch_size
        return rearrange(out, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=gh, w=gw, p1=p, p2=p, c=C)
