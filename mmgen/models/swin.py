"""Swin Transformer (Liu et al., 2021) from the shared blocks, with timm's API.

Each Swin block is the shared `TransformerBlock` run on a windowed layout: the (B, H, W, C)
map is padded to a multiple of the window, cyclically shifted on odd blocks, and cut into
windows (B, nW, N, C); the block's grouped self-attention attends inside each window, with
the learned relative position bias and the shifted-window / padding mask as one additive
bias. A stage moves the tokens from one block's window layout straight to the next one's
(one gather per block boundary instead of roll + partition + reverse + roll back); blocks
only ever see their own layout. Masks and gathers are cached per resolution. Patch merging
halves the grid between stages.

Padding follows torchvision (pad, then shift), but padded tokens are masked out as keys, so
real tokens never see them. Windows larger than a stage's grid are clamped to it and not
shifted (timm). Converters load timm's `SwinTransformer` and torchvision's `swin_t` state
dicts (`Swin.from_timm`, `Swin.from_torchvision`; the key converters live in mmgen.models.convert).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import STEMS, TransformerBlock, TransformerConfig, init_linears, make_norm, make_patch_embed
from ..layers.attention import ATTN_IMPLS
from ..layers.features import take_indices
from ..registry import register_model, register_preset
from ._classify import AUGMENTS, ImageClassifier

# Added to masked (query, key) pairs. Finite, so a row with every key masked (a padding query)
# stays a plain softmax, not NaN. timm and torchvision add -100, but exp(-100) = 4e-44 is a
# float32 denormal, and x86 CPUs compute with denormals microcode-slow: a float32 softmax with
# half its entries at -100 ran 6.5x slower than with -1e4 (3.3 ms against 0.5 ms on this
# project's 2-core CPU). exp(-1e4) is an exact 0; the weights differ from timm's by < 1e-43.
MASK_VALUE = -1e4


@dataclass
class SwinConfig:
    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000  # 0 = no head
    global_pool: str = "avg"  # avg | none (head on every position)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    stem: str = "patch"  # patch (one stride-p conv) | conv (early convs + BN) | cct (conv-ReLU-maxpool) | spt (shifted patches)
    stem_width: int = 64  # channels of the conv / cct stems' last hidden conv
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-5
    dynamic_img_size: bool = False  # accept any size divisible by the patch (windows are padded)
    drop_path: float = 0.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    head_dropout: float = 0.0
    attn_impl: str = "sdpa"
    label_smoothing: float = 0.0
    augment: str = "none"  # none | flip | crop | crop_flip (training batches only)

    def __post_init__(self):
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        if self.global_pool not in ("avg", "none"):
            raise ValueError(f"SwinConfig.global_pool must be 'avg' or 'none', got {self.global_pool!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"SwinConfig.augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.stem not in STEMS:
            raise ValueError(f"SwinConfig.stem must be one of {STEMS}, got {self.stem!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"SwinConfig.attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} need one entry per stage")
        for i, h in enumerate(self.num_heads):
            if (self.embed_dim * 2 ** i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2 ** i} is not divisible by num_heads {h}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size ({self.img_size}) must be divisible by patch_size ({self.patch_size})")
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2 ** i

    def stage_resolution(self, i: int) -> int:
        """Grid side of stage i at img_size (odd sides are padded by the merge, hence ceil)."""
        r = self.img_size // self.patch_size
        for _ in range(i):
            r = (r + 1) // 2
        return r


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the ((2w-1)^2, heads) bias table for every pair of positions in a
    w x w window (Swin's / timm's / torchvision's layout)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), each in [0, 2w-2]
    return rel[0] * (2 * window - 1) + rel[1]


def window_mask(H: int, W: int, window: int, shift: tuple[int, int], device=None) -> torch.Tensor | None:
    """Additive mask (nW, 1, N, N) for a real H x W map padded to a multiple of `window` and
    rolled by -shift: MASK_VALUE where the key lies in another shifted region (the pieces the
    cyclic roll wrapped around) or is padding. None when nothing is masked."""
    Hp, Wp = -(-H // window) * window, -(-W // window) * window
    sh, sw = shift
    if not (sh or sw) and (Hp, Wp) == (H, W):
        return None
    region = torch.zeros(Hp, Wp, device=device)
    if sh or sw:  # the 3 x 3 regions of the rolled map (Swin's slicing)
        hs = ((0, -window), (-window, -sh), (-sh, None)) if sh else ((0, None),)
        ws = ((0, -window), (-window, -sw), (-sw, None)) if sw else ((0, None),)
        cnt = 0
        for h in hs:
            for w in ws:
                region[h[0]:h[1], w[0]:w[1]] = cnt
                cnt += 1
    valid = torch.zeros(Hp, Wp, dtype=torch.bool, device=device)
    valid[:H, :W] = True
    valid = torch.roll(valid, shifts=(-sh, -sw), dims=(0, 1))  # padding moves with the roll
    region = rearrange(region, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window, ww=window)  # (nW, N)
    valid = rearrange(valid, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window, ww=window)
    masked = (region[:, :, None] != region[:, None, :]) | ~valid[:, None, :]  # (nW, N query, N key)
    return (masked.float() * MASK_VALUE)[:, None]  # (nW, 1, N, N)


class SwinBlock(TransformerBlock):
    """The shared pre-norm TransformerBlock on the windows of an H x W map, plus the relative
    position bias table of its window. Its input and output are the map's tokens in this
    block's window layout (`windows`); SwinStage moves them between layouts."""

    def __init__(self, cfg: TransformerConfig, *, window: int, shift: int, drop_path: float = 0.0):
        super().__init__(cfg, drop_path)
        self.window, self.shift = window, shift
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, cfg.num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self._masks: dict = {}  # (H, W, device) -> (shift, mask, layout): one entry per resolution seen

    def windows(self, H: int, W: int, device):
        """(shift, additive mask (nW, 1, N, N) or None, layout) for an H x W map; built once per
        resolution. layout[p] = the flat index into the padded (Hp * Wp) map of window-layout
        position p (after the roll), so `x_flat[:, layout]` is the block's (nW * N) ordering."""
        key = (H, W, str(device))
        if key not in self._masks:
            w = self.window
            Hp, Wp = -(-H // w) * w, -(-W // w) * w
            # no shift along an axis that one window already covers (torchvision's rule)
            shift = (self.shift if Hp > w else 0, self.shift if Wp > w else 0)
            grid = torch.roll(torch.arange(Hp * Wp, device=device).view(Hp, Wp), (-shift[0], -shift[1]), (0, 1))
            layout = rearrange(grid, "(nh wh) (nw ww) -> (nh nw wh ww)", wh=w, ww=w)
            self._masks[key] = shift, window_mask(H, W, w, shift, device), layout
        return self._masks[key]

    def window_bias(self, H: int, W: int, device) -> torch.Tensor:
        """Relative position bias plus the shift / padding mask: (heads, N, N) or (nW, heads, N, N)."""
        mask = self.windows(H, W, device)[1]
        bias = self.rel_pos_bias()  # (heads, N, N)
        return bias if mask is None else bias + mask.to(bias.dtype)

    def rel_pos_bias(self) -> torch.Tensor:
        N = self.window ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]  # (N*N, heads)
        return rearrange(bias, "(n m) h -> h n m", n=N, m=N)  # (heads, N, N)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x (B, nW, N, C): the tokens of an H x W map in this block's window layout (see
        `windows`) -> the same layout. Attention inside each window with the relative bias
        and the shift / padding mask; norm and MLP per token."""
        return super().forward(x, bias=self.window_bias(H, W, x.device))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C), odd sides
    zero-padded. Channel order (x0, x1, x2, x3) = (top-left, bottom-left, top-right,
    bottom-right), as in Swin, timm and torchvision."""

    def __init__(self, dim: int, *, eps: float = 1e-5):
        super().__init__()
        self.norm = make_norm("layernorm", 4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = rearrange(x, "b (h p1) (w p2) c -> b h w (p2 p1 c)", p1=2, p2=2)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class PermuteTokens(torch.autograd.Function):
    """x (B, L, C) -> x[:, perm] for a permutation, whose gradient is the inverse gather
    (index_select's own backward scatter-adds into a zeroed tensor, ~3x slower)."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(1, perm)

    @staticmethod
    def backward(ctx, grad):
        inverse, = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


class SwinStage(nn.Module):
    def __init__(self, cfg: SwinConfig, i: int, drop_paths: list[float]):
        super().__init__()
        dim = cfg.stage_dim(i)
        self.downsample = PatchMerging(cfg.stage_dim(i - 1), eps=cfg.norm_eps) if i > 0 else nn.Identity()
        res = cfg.stage_resolution(i)
        window = min(cfg.window_size, res)  # timm: a window never exceeds the stage's grid...
        shift = 0 if res <= cfg.window_size else window // 2  # ...and is then not shifted
        tcfg = TransformerConfig(embed_dim=dim, depth=cfg.depths[i], num_heads=cfg.num_heads[i], mlp="gelu",
                                 mlp_ratio=cfg.mlp_ratio, norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias,
                                 dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, attn_impl=cfg.attn_impl)
        self.blocks = nn.ModuleList(
            SwinBlock(tcfg, window=window, shift=0 if j % 2 == 0 else shift, drop_path=drop_paths[j])
            for j in range(cfg.depths[i]))
        self._plans: dict = {}  # (H, W, device) -> the gathers between the blocks' layouts (_plan)

    def _plan(self, H: int, W: int, device) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Gathers [padded map -> block 0, block 0 -> block 1, ..., last block -> padded map],
        each a permutation with its inverse (for the gradient), or None where nothing moves
        (one unshifted window per map, as in late stages)."""
        key = (H, W, str(device))
        if key not in self._plans:
            layouts = [blk.windows(H, W, device)[2] for blk in self.blocks]
            inverse = [torch.argsort(p) for p in layouts]
            steps = [layouts[0]] + [inverse[j][layouts[j + 1]] for j in range(len(layouts) - 1)] + [inverse[-1]]
            ident = torch.arange(len(steps[0]), device=device)
            self._plans[key] = [None if torch.equal(s, ident) else (s, torch.argsort(s)) for s in steps]
        return self._plans[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C'): merge, then the blocks on windowed layouts."""
        x = self.downsample(x)
        if not len(self.blocks):
            return x
        B, H, W, C = x.shape
        w = self.blocks[0].window
        Hp, Wp = -(-H // w) * w, -(-W // w) * w
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))  # zeros; masked out as keys in every block
        plan = self._plan(H, W, x.device)
        x = x.reshape(B, Hp * Wp, C)
        for blk, step in zip(self.blocks, plan):
            if step is not None:
                x = PermuteTokens.apply(x, *step)
            x = x.view(B, -1, w * w, C)  # (B, nW, N, C) in this block's layout
            x = blk(x, H, W).flatten(1, 2)
        if plan[-1] is not None:
            x = PermuteTokens.apply(x, *plan[-1])
        x = x.view(B, Hp, Wp, C)
        return x[:, :H, :W] if (Hp, Wp) != (H, W) else x


@register_model("swin")
class Swin(ImageClassifier):
    config_class = SwinConfig

    def __init__(self, config: SwinConfig):
        super().__init__(config)
        c = config
        self.num_features = c.stage_dim(c.num_stages - 1)
        self.patch_embed = make_patch_embed(c.stem, c.img_size, c.patch_size, c.in_chans, c.embed_dim,
                                            stem_width=c.stem_width, dynamic_img_size=c.dynamic_img_size,
                                            norm=make_norm("layernorm", c.embed_dim, eps=c.norm_eps))
        total = sum(c.depths)
        rates = [c.drop_path * k / max(total - 1, 1) for k in range(total)]  # linear over all blocks
        starts = [sum(c.depths[:i]) for i in range(c.num_stages)]
        self.stages = nn.ModuleList(SwinStage(c, i, rates[starts[i]:starts[i] + c.depths[i]])
                                    for i in range(c.num_stages))
        self.norm = make_norm("layernorm", self.num_features, eps=c.norm_eps)
        self.head_drop = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(self.num_features, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        init_linears(self, lambda w: nn.init.trunc_normal_(w, std=0.02), skip=())
        for m in self.modules():
            if isinstance(m, SwinBlock):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    # ---------------------------------------------------------------------- timm API
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        pe = self.patch_embed
        pe.check_input(x)  # channels, size vs patch / img_size: clear errors
        x = rearrange(pe.forward_map(x), "b c h w -> b h w c")  # (B, h, w, C)
        # under autocast the residual stream stays in the conv's bf16, as in timm on CPU (the
        # norms still reduce in float32); a float32 stream in stage 0 alone cost ~5 % in casts
        return pe.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised last-stage map (B, h, w, num_features) (NHWC, as timm)."""
        x = self._embed(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, h, w, C) -> pooled (B, C) with pre_logits, else logits."""
        if self.config.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, *,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Per-stage feature maps (timm's signature): indices None = all stages, k = the last k,
        or a list. output_fmt 'NCHW' (B, C_i, h_i, w_i) or 'NHWC'. norm applies the final norm
        to the last stage's map (the only one it is sized for). Returns (final NHWC map, list)
        or the list alone."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        S = self.config.num_stages
        take = take_indices(S, indices)
        stages = self.stages[:max(take) + 1] if stop_early and take else self.stages
        x = self._embed(x)
        feats = []
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                f = self.norm(x) if norm and i == S - 1 else x
                feats.append(rearrange(f, "b h w c -> b c h w").contiguous() if output_fmt == "NCHW" else f)
        if intermediates_only:
            return feats
        return (self.norm(x) if i == S - 1 else x), feats

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        pool = self.config.global_pool if global_pool is None else global_pool
        self.config = dataclasses.replace(self.config, num_classes=num_classes, global_pool=pool)
        dev = self.norm.weight.device
        self.head = nn.Linear(self.num_features, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def _check_classifier(self) -> None:
        super()._check_classifier()
        if self.config.global_pool != "avg":
            raise ValueError("the classification loss needs pooled logits: set global_pool='avg'")

    # ------------------------------------------------------------------ other libraries
    def load_timm_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        from .convert import convert_timm_swin
        self.load_state_dict(convert_timm_swin(state_dict), strict=True)

    def load_torchvision_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        from .convert import convert_torchvision_swin
        self.load_state_dict(convert_torchvision_swin(state_dict), strict=True)

    @classmethod
    def from_timm(cls, model: nn.Module, **overrides) -> "Swin":
        """Build a Swin with the shape of a timm `SwinTransformer` and load its weights."""
        from .convert import swin_config_from_timm
        swin = cls(SwinConfig(**{**swin_config_from_timm(model), **overrides}))
        swin.load_timm_state_dict(model.state_dict())
        return swin

    @classmethod
    def from_torchvision(cls, model: nn.Module, img_size: int = 224, **overrides) -> "Swin":
        """Build a Swin with the shape of a torchvision `SwinTransformer` (swin_t, ...) and load
        it. torchvision models carry no image size: pass the one you use."""
        from .convert import swin_config_from_torchvision
        swin = cls(SwinConfig(**{**swin_config_from_torchvision(model, img_size), **overrides}))
        swin.load_torchvision_state_dict(model.state_dict())
        return swin


# --------------------------------------------------------------------------------- presets
_SWIN32 = dict(img_size=32, patch_size=2, window_size=4, num_classes=10, embed_dim=48,
               depths=(2, 2, 2), num_heads=(3, 6, 12))
register_preset("swin_tiny_patch2_window4_32", Swin,
                "Swin for 32 px images: patch 2, window 4, 3 stages (16, 8, 4 grids) of width 48-192 (~1.2M)",
                **_SWIN32)
register_preset("swin_tiny", Swin, "alias of swin_tiny_patch2_window4_32", **_SWIN32)
register_preset("swin_tiny_conv_patch2_window4_32", Swin,
                "swin_tiny_patch2_window4_32 with an early-convolution stem (3x3 convs + BN down to the 16x16 "
                "grid): the small-data hybrid (~1.3M)", **{**_SWIN32, "stem": "conv"})
register_preset("swin_tiny_conv_patch4_window4_32", Swin,
                "Swin for 32 px images with the early-convolution stem down to an 8x8 grid (patch 4), window 4, "
                "2 stages (8, 4 grids) of width 48-96 (~0.33M): many cheap steps, the small-data choice on a CPU",
                **{**_SWIN32, "stem": "conv", "patch_size": 4, "depths": (2, 2), "num_heads": (3, 6)})
register_preset("swin_tiny_patch4_window7_224", Swin,
                "Swin-T at 224 px (timm swin_tiny_patch4_window7_224 / torchvision swin_t)",
                img_size=224, patch_size=4, window_size=7, num_classes=1000, embed_dim=96,
                depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path=0.2)
