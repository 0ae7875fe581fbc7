r"""A factorised image tokenizer for flat-coloured objects on black (the shapes data): each
patch of `patch` x `patch` pixels becomes one token that is the pair (silhouette code, colour
code), so a transformer can learn the outline of a circle once for every colour.

    tok = PaletteTokenizer.fit(images, PaletteConfig(patch=2, silhouettes=64, colours=6))
    tokens = tok.encode_tokens(images)   # (B, 16, 16) ids = silhouette * colours + colour
    images = tok.decode_tokens(tokens)   # (B, 3, 32, 32) in [-1, 1]

An image is read as intensity x colour: a pixel's intensity is its largest channel (an
antialiased edge pixel of a saturated colour is coverage x colour, so intensity = coverage)
and its colour is rgb / intensity. A patch's silhouette code is the nearest of `silhouettes`
k-means centroids of the patch's patch*patch intensities (the all-dark patch is one of them);
its colour code is the nearest of `colours` k-means centroids of object pixels' colours,
read at the patch's brightest pixel. A patch with no object pixel takes the colour of the
nearest object pixel, so the colour codes form a map of which object is closest: the colour is
then never a guess in the background, and a transformer predicting silhouette and colour
separately (DALLEConfig.image_factors) meets no patch where the two disagree.

Decoding multiplies the silhouette's intensities by the colour. Nothing is trained by
gradients: `fit` runs k-means (k-means++ seeding, Lloyd iterations) on training images.
iGPT (Chen et al. 2020) tokenised pixels the same way, by k-means colour clusters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import register_model, register_preset
from .autoencoder import psnr
from .base import Model


@dataclass
class PaletteConfig:
    img_size: int = 32
    in_chans: int = 3
    patch: int = 2  # pixels per token side
    silhouettes: int = 64  # k-means centroids of a patch's intensities
    colours: int = 6  # k-means centroids of object pixels' colours
    threshold: float = 0.1  # a pixel with intensity above this (in [0, 1]) belongs to an object

    def __post_init__(self):
        if self.in_chans != 3:
            raise ValueError(f"the palette tokenizer reads RGB images, got in_chans={self.in_chans}")
        if self.patch < 1 or self.img_size % self.patch:
            raise ValueError(f"patch must divide img_size, got patch={self.patch}, img_size={self.img_size}")
        if self.silhouettes < 2 or self.colours < 1:
            raise ValueError(f"need silhouettes >= 2 and colours >= 1, got {self.silhouettes}, {self.colours}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch


REGION_LEVEL = 0.5  # object_regions: a pixel covered more than this belongs to its object's region


def grid_components(mask: torch.Tensor, connectivity: int = 4) -> torch.Tensor:
    """Connected regions of a boolean grid: mask (B, h, w) -> labels (B, h, w) long, -1 off the
    mask, else the smallest flat index (y * w + x) in the cell's region (4- or 8-connected).
    Every cell takes the smallest label among itself and its neighbours until nothing changes."""
    if mask.ndim != 3 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool (B, h, w) tensor, got {mask.dtype} {tuple(mask.shape)}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    B, h, w = mask.shape
    big = h * w  # above every label
    # offsets into the grid padded by one cell: above, below, left, right (and the diagonals)
    shifts = [(0, 1), (2, 1), (1, 0), (1, 2)] + ([(0, 0), (0, 2), (2, 0), (2, 2)] if connectivity == 8 else [])
    labels = torch.arange(big, device=mask.device).view(1, h, w).expand(B, h, w).clone()
    labels = labels.masked_fill(~mask, big)
    while True:
        padded = F.pad(labels, (1, 1, 1, 1), value=big)  # (B, h + 2, w + 2)
        best = labels
        for dy, dx in shifts:
            best = torch.minimum(best, padded[:, dy:dy + h, dx:dx + w])
        best = best.masked_fill(~mask, big)
        if torch.equal(best, labels):
            return labels.masked_fill(~mask, -1)
        labels = best


def kmeans(x: torch.Tensor, k: int, *, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """k centroids (k, D) of the rows of x (N, D): k-means++ seeding, then Lloyd iterations; a
    centroid left without points is re-seeded at the point farthest from its centroid."""
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} points, got {x.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    centres = x[torch.randint(0, x.shape[0], (1,), generator=g)]
    d2 = torch.cdist(x, centres).squeeze(1) ** 2
    for _ in range(1, k):  # k-means++: the next centre with probability proportional to d^2
        pick = torch.multinomial(d2 + 1e-12, 1, generator=g) if float(d2.sum()) > 0 else \
            torch.randint(0, x.shape[0], (1,), generator=g)
        centres = torch.cat([centres, x[pick]])
        d2 = torch.minimum(d2, (torch.cdist(x, x[pick]).squeeze(1)) ** 2)
    for _ in range(iters):
        dist, assign = torch.cdist(x, centres).min(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        new = sums / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if bool(empty.any()):  # re-seed empty clusters at the worst-served points
            far = dist.topk(int(empty.sum())).indices
            new[empty] = x[far]
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


@register_model("palette")
class PaletteTokenizer(Model):
    """Patch tokens = (silhouette code, colour code); see the module docstring."""

    config_class = PaletteConfig
    trainable = False  # fitted by k-means (fit), not by gradients

    def __init__(self, config: PaletteConfig):
        super().__init__(config)
        c = config
        self.register_buffer("silhouette_codes", torch.zeros(c.silhouettes, c.patch * c.patch))  # intensities
        self.register_buffer("colour_codes", torch.zeros(c.colours, 3))  # rgb in [0, 1], max channel 1

    # -------------------------------------------------------------------- the tokenizer API
    @property
    def factors(self) -> tuple[int, int]:
        """(silhouette codes, colour codes): a token id is silhouette * colours + colour."""
        return self.config.silhouettes, self.config.colours

    @property
    def vocab_size(self) -> int:
        return self.config.silhouettes * self.config.colours

    codebook_size = vocab_size

    @property
    def token_shape(self) -> tuple[int, int]:
        return self.config.grid, self.config.grid

    @property
    def tokens_per_image(self) -> int:
        return self.config.grid ** 2

    @property
    def device(self) -> torch.device:
        return self.silhouette_codes.device

    def object_regions(self, silhouettes: torch.Tensor) -> torch.Tensor:
        """Which object each token draws: silhouette codes (B, h, w) -> labels (B, h, w), -1 for a
        token whose brightest pixel is under half covered, else the label (grid_components) of the
        4-connected region of over-half-covered pixels that holds that pixel. Antialiased fringes
        of two objects never join at this level: on 5,000 train, test and held-out scenes every
        region is one object and has one colour code (tests/test_palette.py checks 200)."""
        c, p = self.config, self.config.patch
        if silhouettes.ndim != 3 or tuple(silhouettes.shape[1:]) != self.token_shape:
            raise ValueError(f"expected silhouette codes (B, {c.grid}, {c.grid}), got {tuple(silhouettes.shape)}")
        B = silhouettes.shape[0]
        inten = self.silhouette_codes[silhouettes.to(self.device).flatten(1)]  # (B, h*w, p*p)
        pixels = F.fold(inten.transpose(1, 2), c.img_size, p, stride=p)[:, 0]  # (B, H, W)
        labels = grid_components(pixels > REGION_LEVEL)  # (B, H, W), -1 off the objects
        per_token = F.unfold(labels[:, None].float(), p, stride=p).transpose(1, 2).long()  # (B, h*w, p*p)
        return per_token.gather(-1, inten.argmax(-1, keepdim=True)).view(B, c.grid, c.grid)

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, c.img_size, c.img_size):
            raise ValueError(f"expected images (B, 3, {c.img_size}, {c.img_size}) in [-1, 1], got "
                             f"{tuple(images.shape)}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images hold nan or inf values")
        return ((images.float() + 1) / 2).clamp(0, 1).to(self.device)

    def _read(self, x: torch.Tensor):
        """x (B, 3, H, W) in [0, 1] -> intensity patches (B, h*w, p*p), pixel colours (B, 3, H, W)
        (rgb / intensity), the object mask (B, H, W)."""
        p = self.config.patch
        intensity = x.amax(1)  # (B, H, W)
        patches = F.unfold(intensity[:, None], p, stride=p).transpose(1, 2)  # (B, h*w, p*p)
        colour = x / intensity.clamp_min(1e-6)[:, None]
        return patches, colour, intensity > self.config.threshold

    @torch.no_grad()
    def encode_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> token ids (B, h, w)."""
        x = self._check(images)
        c, p = self.config, self.config.patch
        B, h = x.shape[0], c.grid
        patches, colour, mask = self._read(x)
        sil = torch.cdist(patches, self.silhouette_codes[None].expand(B, -1, -1)).argmin(-1)  # (B, h*w)
        # each pixel's colour code; the object pixels' only matter
        pix = torch.cdist(colour.flatten(2).transpose(1, 2), self.colour_codes[None].expand(B, -1, -1)).argmin(-1)
        # a patch's colour: its brightest pixel's when it holds an object pixel, else the nearest object pixel's
        inten = x.amax(1).flatten(1)  # (B, H*W)
        W = c.img_size
        ys, xs = torch.meshgrid(torch.arange(W, device=x.device), torch.arange(W, device=x.device), indexing="ij")
        pix_xy = torch.stack([ys.flatten(), xs.flatten()], -1).float()  # (H*W, 2)
        centre = (torch.arange(h, device=x.device).float() * p + (p - 1) / 2)
        cy, cx = torch.meshgrid(centre, centre, indexing="ij")
        patch_xy = torch.stack([cy.flatten(), cx.flatten()], -1)  # (h*w, 2)
        d = torch.cdist(patch_xy, pix_xy)  # (h*w, H*W)
        inside = d <= (p - 1) / 2 * 2 ** 0.5 + 1e-4  # the pixels of each patch
        flat_mask = mask.flatten(1)  # (B, H*W)
        # brightest pixel inside the patch; else nearest object pixel (ties: the brighter)
        score = torch.where(inside[None], 1e6 + inten[:, None, :], -d[None] + 1e-3 * inten[:, None, :])
        score = score.masked_fill(~flat_mask[:, None, :], float("-inf"))
        src = score.argmax(-1)  # (B, h*w); an image without object pixels gets pixel 0
        col = pix.gather(1, src)
        col = torch.where(flat_mask.any(1, keepdim=True), col, torch.zeros_like(col))
        return (sil * c.colours + col).view(B, h, h)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """token ids (B, h, w) -> images (B, 3, H, W) in [-1, 1]."""
        c, p = self.config, self.config.patch
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != self.token_shape:
            raise ValueError(f"expected token ids (B, {c.grid}, {c.grid}), got {tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]")
        tokens = tokens.to(self.device).flatten(1)  # (B, h*w)
        inten = self.silhouette_codes[tokens // c.colours]  # (B, h*w, p*p)
        inten = F.fold(inten.transpose(1, 2), c.img_size, p, stride=p)  # (B, 1, H, W)
        colour = self.colour_codes[tokens % c.colours].transpose(1, 2).reshape(-1, 3, c.grid, c.grid)
        colour = colour.repeat_interleave(p, 2).repeat_interleave(p, 3)  # (B, 3, H, W)
        return (inten.clamp(0, 1) * colour * 2 - 1).clamp(-1, 1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_tokens(self.encode_tokens(images))

    # -------------------------------------------------------------------- fitting
    @classmethod
    @torch.no_grad()
    def fit(cls, images: torch.Tensor, config: PaletteConfig | None = None, *, seed: int = 0,
            max_points: int = 400_000) -> "PaletteTokenizer":
        """A tokenizer whose codes are k-means centroids of these images' patch intensities and
        object-pixel colours (images (N, 3, H, W) in [-1, 1]; at most max_points of each kind)."""
        tok = cls(config or PaletteConfig())
        x = tok._check(images)
        patches, colour, mask = tok._read(x)
        g = torch.Generator().manual_seed(seed)
        patches = patches.flatten(0, 1)
        patches = patches[torch.randperm(patches.shape[0], generator=g)[:max_points]]
        colours = colour.permute(0, 2, 3, 1)[mask]  # (n object pixels, 3)
        colours = colours[torch.randperm(colours.shape[0], generator=g)[:max_points]]
        tok.silhouette_codes.copy_(kmeans(patches, tok.config.silhouettes, seed=seed))
        tok.colour_codes.copy_(kmeans(colours, tok.config.colours, seed=seed).clamp(0, 1))
        return tok

    # -------------------------------------------------------------------- Model contract
    def loss(self, batch):
        raise TypeError("the palette tokenizer is fitted by k-means (PaletteTokenizer.fit, "
                        "scripts/fit_palette.py), not trained by gradients")

    @torch.no_grad()
    def evaluate(self, batch) -> dict[str, float]:
        images = batch["image"] if isinstance(batch, dict) else batch
        rec = self.reconstruct(images)
        return {"psnr": float(psnr(rec, images.to(rec.device)).mean())}

    def example_batch(self, batch_size: int = 2, device="cpu"):
        g = torch.Generator().manual_seed(0)
        s = self.config.img_size
        return {"image": (torch.rand(batch_size, 3, s, s, generator=g) * 2 - 1).to(device)}


register_preset("palette_tiny", PaletteTokenizer, "16 px -> 8x8 tokens of (8 silhouettes x 3 colours); tests",
                img_size=16, patch=2, silhouettes=8, colours=3)
register_preset("palette_32", PaletteTokenizer,
                "32 px -> 16x16 tokens of (64 silhouettes x 6 colours), fitted by k-means: the factorised "
                "tokenizer of the shapes data", img_size=32, patch=2, silhouettes=64, colours=6)
