"""VQ-VAE image tokenizer (van den Oord et al. 2017; EMA codebook as in VQ-VAE-2 / Jukebox)
and the Gumbel-softmax dVAE of DALL-E (Ramesh et al. 2021), sharing one conv
encoder/decoder (mmgen.models.autoencoder).

As a tokenizer for autoregressive image models:

    vq = mmgen.create_model("vq_32")            # 32 px -> 8x8 tokens from 512 codes
    tokens = vq.encode_tokens(images)           # LongTensor (B, 8, 8), deterministic
    images = vq.decode_tokens(tokens)           # (B, 3, 32, 32) in [-1, 1]

quantizer="vq": nearest-neighbour codes, straight-through gradients, commitment loss
beta * ||z_e - sg(z_q)||^2, codebook updated by exponential moving averages of the
assigned encoder outputs (no codebook loss term), initialised from encoder outputs on the
first training batch, and dead codes (EMA assignment count < dead_code_threshold) restarted
from random encoder outputs of the current batch.

quantizer="gumbel": the encoder outputs logits over the codebook at each position; training
decodes a Gumbel-softmax relaxation (temperature annealed from gumbel_tau_start to
gumbel_tau_end over gumbel_anneal_steps, exponentially) and adds a KL(q || uniform)
term (nats per token) warmed up linearly to gumbel_kl_weight; tokens are the argmax.
Schedules read the `step` buffer, which loss() advances in training mode, so they survive
checkpoint resume and need nothing from the training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..registry import register_model, register_preset
from .autoencoder import ConvAEConfig, ConvDecoder, ConvEncoder, batch_images, check_images, example_images, psnr
from .base import Model

QUANTIZERS = ("vq", "gumbel")
RECON_LOSSES = ("mse", "l1")


@dataclass
class VQConfig(ConvAEConfig):
    quantizer: str = "vq"  # vq (EMA codebook) | gumbel (DALL-E dVAE)
    codebook_size: int = 512
    code_dim: int = 64
    recon_loss: str = "mse"  # mse | l1 on [-1, 1] images
    # vq
    commitment: float = 0.25  # beta of the commitment loss
    ema_decay: float = 0.99
    ema_eps: float = 1e-5  # Laplace smoothing of the cluster sizes
    dead_code_threshold: float = 1.0  # restart codes whose EMA count per batch falls below this; 0 = off
    # gumbel
    gumbel_tau_start: float = 1.0
    gumbel_tau_end: float = 1.0 / 16
    gumbel_anneal_steps: int = 5000
    gumbel_kl_weight: float = 5e-4
    gumbel_kl_warmup: int = 1000  # steps of linear warm-up of the KL weight (0 = none)
    gumbel_hard: bool = False  # straight-through hard one-hot samples instead of the soft relaxation

    def __post_init__(self):
        super().__post_init__()
        for name, value, allowed in (("quantizer", self.quantizer, QUANTIZERS),
                                     ("recon_loss", self.recon_loss, RECON_LOSSES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ValueError(f"codebook_size must be >= 2 and code_dim >= 1, got {self.codebook_size}, {self.code_dim}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 < self.gumbel_tau_end <= self.gumbel_tau_start:
            raise ValueError(f"need 0 < gumbel_tau_end <= gumbel_tau_start, got {self.gumbel_tau_end}, "
                             f"{self.gumbel_tau_start}")


def _all_reduce(*tensors: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


def _broadcast(t: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(t, 0)


def codebook_stats(tokens: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Share of the codebook used by `tokens` (any shape) and the perplexity of their histogram."""
    counts = torch.bincount(tokens.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"usage": float((counts > 0).float().mean()), "perplexity": float(entropy.exp())}


class EMAVectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation against an EMA-updated codebook.

    forward(z (B, D, h, w), update=None) -> (z_q (B, D, h, w) with straight-through
    gradient, tokens (B, h, w), commit loss ||z - sg(z_q)||^2 (mean), logs).
    update=None updates the codebook when training with gradients enabled.

    One EMA step on a batch of N vectors z_n assigned to codes k(n):
        counts_k = #{n: k(n)=k},  sums_k = sum_{n: k(n)=k} z_n
        N_k <- decay N_k + (1 - decay) counts_k,   m_k <- decay m_k + (1 - decay) sums_k
        e_k  = m_k / Ñ_k  with Laplace-smoothed  Ñ_k = (N_k + eps) / (sum N + K eps) * sum N
    then every code with N_k < threshold is set to a random z_n of the batch (N_k =
    threshold, m_k = threshold z_n)."""

    def __init__(self, codebook_size: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_threshold: float = 1.0):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps, self.threshold = decay, eps, dead_code_threshold
        self.register_buffer("embed", torch.randn(codebook_size, dim))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initted", torch.zeros((), dtype=torch.bool))
        self.last_restarts = 0

    def assign(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of flat (N, D), in float32 (bf16 distances tie)."""
        flat, e = flat.float(), self.embed.float()
        dist_ = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]  # (N, K)
        return dist_.argmin(1)

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor) -> None:
        """Data-dependent init: codes = random encoder outputs (with replacement if N < K)."""
        idx = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        self.embed.copy_(flat[idx].float())
        _broadcast(self.embed)
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, tokens: torch.Tensor) -> None:
        flat = flat.float()
        onehot = F.one_hot(tokens, self.codebook_size).float()  # (N, K)
        counts = onehot.sum(0)  # (K,)
        sums = onehot.t() @ flat  # (K, D)
        _all_reduce(counts, sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self.restart_dead(flat)

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> int:
        self.last_restarts = 0
        if self.threshold <= 0:
            return 0
        dead = self.cluster_size < self.threshold  # (K,) identical on every rank (all-reduced counts)
        num = int(dead.sum())
        if num:
            picks = flat[torch.randint(0, flat.shape[0], (num,), device=flat.device)]  # (num, D)
            _broadcast(picks)
            self.embed[dead] = picks
            self.embed_avg[dead] = picks * self.threshold
            self.cluster_size[dead] = self.threshold
        self.last_restarts = num
        return num

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, h, w) -> codes (B, D, h, w)."""
        return rearrange(F.embedding(tokens, self.embed), "b h w d -> b d h w")

    def forward(self, z: torch.Tensor, update: bool | None = None):
        B, D, H, W = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d")  # (N, D)
        if update is None:
            update = self.training and torch.is_grad_enabled()
        if update and not bool(self.initted):
            self.init_from(flat.detach())
        tokens = self.assign(flat.detach())  # (N,)
        z_q = rearrange(self.embed[tokens].to(z.dtype), "(b h w) d -> b d h w", b=B, h=H, w=W)
        commit = F.mse_loss(z, z_q.detach())
        if update:
            self.ema_update(flat.detach(), tokens)
        z_q = z + (z_q - z).detach()  # straight-through: the decoder's gradient flows to the encoder
        tokens = tokens.view(B, H, W)
        logs = codebook_stats(tokens, self.codebook_size)
        logs["dead_codes"] = float((self.cluster_size < self.threshold).sum()) if self.threshold > 0 else 0.0
        logs["restarts"] = float(self.last_restarts) if update else 0.0
        return z_q, tokens, commit, logs


class GumbelQuantizer(nn.Module):
    """DALL-E dVAE bottleneck: logits (B, K, h, w) -> relaxed one-hot -> codebook mix.

    forward(logits, tau, hard_eval) -> (z (B, D, h, w), tokens (B, h, w), kl (nats/token), logs)."""

    def __init__(self, codebook_size: int, dim: int, *, hard: bool = False):
        super().__init__()
        self.codebook_size, self.hard = codebook_size, hard
        self.embed = nn.Embedding(codebook_size, dim)

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        return rearrange(self.embed(tokens), "b h w d -> b d h w")

    def forward(self, logits: torch.Tensor, tau: float, sample: bool):
        tokens = logits.argmax(1)  # (B, h, w)
        if sample:
            soft = F.gumbel_softmax(logits.float(), tau=tau, hard=self.hard, dim=1).to(logits.dtype)  # (B, K, h, w)
        else:
            soft = F.one_hot(tokens, self.codebook_size).permute(0, 3, 1, 2).to(logits.dtype)
        z = torch.einsum("bkhw,kd->bdhw", soft, self.embed.weight.to(logits.dtype))
        logq = F.log_softmax(logits.float(), dim=1)
        kl = (logq.exp() * (logq + math.log(self.codebook_size))).sum(1).mean()  # KL(q || uniform) per token
        logs = codebook_stats(tokens, self.codebook_size)
        return z, tokens, kl, logs


@register_model("vq")
class VQModel(Model):
    """VQ-VAE / dVAE image tokenizer. Images are (B, C, H, W) in [-1, 1]."""

    config_class = VQConfig

    def __init__(self, config: VQConfig):
        super().__init__(config)
        c = config
        enc_out = c.code_dim if c.quantizer == "vq" else c.codebook_size  # gumbel: logits per code
        self.encoder = ConvEncoder(c, enc_out)
        if c.quantizer == "vq":
            self.quantizer = EMAVectorQuantizer(c.codebook_size, c.code_dim, decay=c.ema_decay, eps=c.ema_eps,
                                                dead_code_threshold=c.dead_code_threshold)
        else:
            self.quantizer = GumbelQuantizer(c.codebook_size, c.code_dim, hard=c.gumbel_hard)
        self.decoder = ConvDecoder(c, c.code_dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # drives the gumbel schedules
        # the first training images, kept (and saved) so that sample_images -- which the training
        # loop calls on a separate evaluation copy of the model -- can show their reconstructions
        self.register_buffer("preview", torch.zeros(8, c.in_chans, c.img_size, c.img_size))
        self.register_buffer("preview_n", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------- properties
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def token_shape(self) -> tuple[int, int]:
        s = self.config.latent_size
        return (s, s)

    @property
    def tokens_per_image(self) -> int:
        return self.config.latent_size ** 2

    def tau(self) -> float:
        """Gumbel temperature at the current step (exponential from start to end)."""
        c = self.config
        frac = min(int(self.step) / max(c.gumbel_anneal_steps, 1), 1.0)
        return c.gumbel_tau_start * (c.gumbel_tau_end / c.gumbel_tau_start) ** frac

    def kl_weight(self) -> float:
        c = self.config
        if c.gumbel_kl_warmup <= 0:
            return c.gumbel_kl_weight
        return c.gumbel_kl_weight * min(int(self.step) / c.gumbel_kl_warmup, 1.0)

    # ----------------------------------------------------------------- core
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation encoder output: (B, code_dim, h, w) for vq, logits (B, K, h, w) for gumbel."""
        check_images(images, self.config)
        return self.encoder(images)

    def quantize(self, z: torch.Tensor, *, update: bool | None = None, sample: bool | None = None):
        """-> (z_q (B, code_dim, h, w), tokens (B, h, w), aux loss (commit or KL), logs)."""
        if self.config.quantizer == "vq":
            return self.quantizer(z, update=update)
        return self.quantizer(z, self.tau(), self.training if sample is None else sample)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, code_dim, h, w) -> images (B, C, H, W), unclamped."""
        return self.decoder(z_q)

    def forward(self, images: torch.Tensor):
        z_q, tokens, aux, logs = self.quantize(self.encode(images))
        return self.decode(z_q), tokens, aux, logs

    @torch.no_grad()
    def encode_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> token ids LongTensor (B, h, w). Deterministic; never
        updates the codebook."""
        z = self.encode(images)
        if self.config.quantizer == "vq":
            B, D, H, W = z.shape
            return self.quantizer.assign(rearrange(z, "b d h w -> (b h w) d")).view(B, H, W)
        return z.argmax(1)

    @torch.no_grad()
    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, h, w) (or (B, h*w)) -> images (B, C, H, W) clamped to [-1, 1]."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point:
            raise TypeError(f"decode_tokens expects an integer tensor (B, h, w), got "
                            f"{tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
        h, w = self.token_shape
        if tokens.ndim == 2 and tokens.shape[1] == h * w:
            tokens = tokens.view(-1, h, w)  # (B, h*w) raster order -> (B, h, w)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (h, w):
            raise ValueError(f"expected tokens (B, {h}, {w}) or (B, {h * w}), got {tuple(tokens.shape)}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"token ids must be in [0, {self.codebook_size}), got range [{lo}, {hi}]")
        return self.decode(self.quantizer.lookup(tokens.long().to(self.device))).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_tokens(self.encode_tokens(images))

    # ----------------------------------------------------------------- training contract
    def recon_loss(self, recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.config.recon_loss == "l1":
            return F.l1_loss(recon, images)
        return F.mse_loss(recon, images)

    def loss(self, batch):
        images = batch_images(batch).to(self.device)
        check_images(images, self.config)
        recon, tokens, aux, logs = self(images)
        rec = self.recon_loss(recon, images)
        if self.config.quantizer == "vq":
            total = rec + self.config.commitment * aux
            logs = {"recon": rec.item(), "commit": aux.item(), **logs}
        else:
            w = self.kl_weight()
            total = rec + w * aux
            logs = {"recon": rec.item(), "kl": aux.item(), "tau": self.tau(), "kl_weight": w, **logs}
        if self.training:
            self.step += 1
            if int(self.preview_n) == 0:
                n = min(images.shape[0], self.preview.shape[0])
                self.preview[:n] = images[:n].detach()
                self.preview_n.fill_(n)
        logs["psnr"] = float(psnr(recon.detach(), images).mean())
        return total, logs

    @torch.no_grad()
    def evaluate(self, batch) -> dict[str, float]:
        """Deterministic reconstruction metrics: PSNR (dB), MSE, codebook usage/perplexity of the batch."""
        images = batch_images(batch).to(self.device)
        tokens = self.encode_tokens(images)
        recon = self.decode_tokens(tokens)
        return {"psnr": float(psnr(recon, images).mean()), "mse": float(F.mse_loss(recon, images)),
                **codebook_stats(tokens, self.codebook_size)}

    def example_batch(self, batch_size: int = 2, device="cpu"):
        return {"image": example_images(self.config, batch_size, device)}

    @torch.no_grad()
    def sample_images(self, n: int = 16, seed: int = 0) -> torch.Tensor:
        """For the training loop's PNG grids: (original, reconstruction) pairs of the first
        training images (the `preview` buffer); before any training, decodes random tokens."""
        if int(self.preview_n) > 0:
            x = self.preview[: min(max(n // 2, 1), int(self.preview_n))]
            pairs = torch.stack([x, self.reconstruct(x)], dim=1)  # (b, 2, C, H, W)
            return pairs.flatten(0, 1)[:n]
        g = torch.Generator().manual_seed(seed)
        h, w = self.token_shape
        return self.decode_tokens(torch.randint(0, self.codebook_size, (n, h, w), generator=g))


# ------------------------------------------------------------------------- presets
register_preset("vq_tiny", VQModel, "16 px -> 4x4 tokens from 32 codes; for tests",
                img_size=16, ch=8, ch_mult=(1, 2, 2), groups=8, codebook_size=32, code_dim=8)
register_preset("dvae_tiny", VQModel, "Gumbel dVAE, 16 px -> 4x4 tokens from 32 codes; for tests",
                img_size=16, ch=8, ch_mult=(1, 2, 2), groups=8, codebook_size=32, code_dim=8,
                quantizer="gumbel", gumbel_anneal_steps=100, gumbel_kl_warmup=10)
register_preset("vq_32", VQModel, "VQ-VAE tokenizer: 32 px -> 8x8 tokens from 512 codes (EMA codebook)",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2), codebook_size=512, code_dim=64)
# 2x downsampling: each token covers 2x2 pixels, so small shapes keep their edges (the 8x8
# grid of vq_32 turns most 7-px crosses into blobs); 4x the tokens for the generator.
register_preset("vq_32_16x16", VQModel, "VQ-VAE tokenizer: 32 px -> 16x16 tokens from 512 codes (EMA codebook)",
                img_size=32, patch=1, ch=32, ch_mult=(1, 2), codebook_size=512, code_dim=64)
register_preset("vq_32_attn", VQModel, "vq_32 with a 2-block transformer bottleneck at 8x8",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2), codebook_size=512, code_dim=64,
                bottleneck="transformer", bottleneck_depth=2, bottleneck_heads=4)
register_preset("dvae_32", VQModel, "DALL-E-style Gumbel-softmax dVAE: 32 px -> 8x8 tokens from 512 codes",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2), codebook_size=512, code_dim=64, quantizer="gumbel")
