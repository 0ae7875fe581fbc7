"""Gaussian VAE (Kingma & Welling 2014) with a convolutional encoder/decoder, an optional
transformer bottleneck (mmgen.layers), beta and KL warm-up (linear or cyclical, Fu et al.
2019), and spatial latents shaped for latent diffusion: vae_32 maps 32 px images to
latents (4, 8, 8).

Likelihood and bits/dim. Images in [-1, 1] are treated as 8-bit data: each value is
snapped to the 256-level grid and the decoder's density is integrated over its bin of
width 2/255, with the two end bins extended to -inf / +inf (PixelCNN++ / DDPM). The
decoder predicts the mean image; the scale is one learned log-std per channel (a
"calibrated decoder", Rybkin et al. 2021), so the reconstruction weight is learnt rather
than tuned. likelihood="gaussian" integrates a Gaussian, "logistic" a logistic
distribution. The negative ELBO,

    -ELBO(x) = E_q[-log P(x | z)] + KL(q(z | x) || N(0, I))     (one sample of z)

is a discrete upper bound on -log P(x), reported in bits per dimension:
bits/dim = -ELBO / (C * H * W * ln 2). Training minimises (nll + beta_t * KL) / (C*H*W),
with beta_t from the KL schedule (the reported bits/dim always uses beta = 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_model, register_preset
from .autoencoder import (ConvAEConfig, ConvDecoder, ConvEncoder, batch_images, bits_per_dim, check_images,
                          example_images, psnr)
from .base import Model

LIKELIHOODS = ("gaussian", "logistic")
KL_SCHEDULES = ("constant", "linear", "cyclical")
BIN = 1.0 / 255.0  # half a bin of the 8-bit grid on [-1, 1]


@dataclass
class VAEConfig(ConvAEConfig):
    latent_channels: int = 4
    likelihood: str = "gaussian"  # gaussian | logistic, both discretised on 8-bit bins
    log_scale_init: float = -2.0  # initial decoder log-std (per channel) in [-1, 1] units
    learn_scale: bool = True  # learn the per-channel decoder scale (else fixed at log_scale_init)
    beta: float = 1.0  # weight of the KL term at the end of warm-up
    kl_schedule: str = "linear"  # constant | linear | cyclical
    kl_warmup_steps: int = 1000  # linear: steps from 0 to beta; cyclical: ramp length in a cycle
    kl_cycle_steps: int = 2000  # cyclical: period of one cycle
    kl_num_cycles: int = 4  # cyclical: cycles before beta stays constant
    scaling_factor: float = 1.0  # latents for diffusion = posterior mean * scaling_factor

    def __post_init__(self):
        super().__post_init__()
        for name, value, allowed in (("likelihood", self.likelihood, LIKELIHOODS),
                                     ("kl_schedule", self.kl_schedule, KL_SCHEDULES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.kl_schedule == "cyclical" and not 0 < self.kl_warmup_steps <= self.kl_cycle_steps:
            raise ValueError(f"cyclical KL needs 0 < kl_warmup_steps <= kl_cycle_steps, got "
                             f"{self.kl_warmup_steps} and {self.kl_cycle_steps}")
        if self.latent_channels < 1 or self.beta < 0:
            raise ValueError(f"need latent_channels >= 1 and beta >= 0, got {self.latent_channels}, {self.beta}")


def kl_beta(step: int, cfg: VAEConfig) -> float:
    """The KL weight at a training step under cfg.kl_schedule."""
    if cfg.kl_schedule == "constant" or cfg.kl_warmup_steps <= 0:
        return cfg.beta
    if cfg.kl_schedule == "linear":
        return cfg.beta * min(step / cfg.kl_warmup_steps, 1.0)
    if step >= cfg.kl_cycle_steps * cfg.kl_num_cycles:
        return cfg.beta
    return cfg.beta * min((step % cfg.kl_cycle_steps) / cfg.kl_warmup_steps, 1.0)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over all but the batch dim: (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def _log_normal_cdf(x):
    return torch.special.log_ndtr(x)


def _log_logistic_cdf(x):
    return -F.softplus(-x)


def _log_bin_mass(a: torch.Tensor, b: torch.Tensor, log_cdf) -> torch.Tensor:
    """log(F(b) - F(a)) for a < b and a symmetric F (F(-x) = 1 - F(x)), computed in log
    space on the side of the lower tail so it stays accurate far from the mean."""
    flip = (a + b) > 0  # upper tail: F(b) - F(a) = F(-a) - F(-b)
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    l_hi, l_lo = log_cdf(hi), log_cdf(lo)
    return l_hi + torch.log((-torch.expm1(l_lo - l_hi)).clamp_min(1e-30))


def discretized_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                               kind: str = "gaussian") -> torch.Tensor:
    """log P(x) per element of 8-bit data x in [-1, 1] under a Gaussian / logistic of `mean`
    and `log_scale` (std for Gaussian, scale s for logistic) integrated over the bin
    [x - 1/255, x + 1/255]; the end bins x = -1 and x = +1 extend to -inf and +inf."""
    log_cdf = _log_normal_cdf if kind == "gaussian" else _log_logistic_cdf
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # snap onto the 8-bit grid
    inv = torch.exp(-log_scale.float())
    a = (x - BIN - mean.float()) * inv  # lower bin edge, standardised
    b = (x + BIN - mean.float()) * inv  # upper bin edge
    interior = _log_bin_mass(a, b, log_cdf)
    left = log_cdf(b)  # x = -1: F(b)
    right = log_cdf(-a)  # x = +1: 1 - F(a)
    return torch.where(x < -1 + BIN, left, torch.where(x > 1 - BIN, right, interior))


class DiagonalGaussian:
    """The posterior q(z | x): mean and logvar (B, zc, h, w)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean, self.logvar = mean, logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                          device="cpu" if generator is not None else self.mean.device).to(self.mean.device)
        return self.mean + self.std * eps  # reparameterisation

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), per sample (B,) in nats."""
        return gaussian_kl(self.mean, self.logvar)


@register_model("vae")
class VAE(Model):
    """Gaussian VAE with spatial latents (B, latent_channels, h, w). Images in [-1, 1]."""

    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(c, 2 * c.latent_channels)  # mean and logvar
        self.decoder = ConvDecoder(c, c.latent_channels)
        init = torch.full((c.in_chans,), float(c.log_scale_init))
        if c.learn_scale:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # drives the KL schedule

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.config.latent_size
        return (self.config.latent_channels, s, s)

    @property
    def num_dims(self) -> int:
        return self.config.in_chans * self.config.img_size ** 2

    def beta(self) -> float:
        return kl_beta(int(self.step), self.config)

    # ----------------------------------------------------------------- core
    def encode(self, images: torch.Tensor) -> DiagonalGaussian:
        check_images(images, self.config)
        mean, logvar = self.encoder(images).chunk(2, dim=1)  # 2 x (B, zc, h, w)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, zc, h, w) -> the decoder's mean image (B, C, H, W), unclamped."""
        zc, h, w = self.latent_shape
        if z.ndim != 4 or tuple(z.shape[1:]) != (zc, h, w):
            raise ValueError(f"expected latents (B, {zc}, {h}, {w}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        post = self.encode(images)
        return self.decode(post.sample(generator)), post

    def log_likelihood(self, images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log P(x | z) per sample (B,) in nats, discretised on 8-bit bins."""
        log_scale = self.log_scale.clamp(-7.0, 5.0).view(1, -1, 1, 1)
        return discretized_log_likelihood(images, mean, log_scale, self.config.likelihood).flatten(1).sum(1)

    def elbo_terms(self, images: torch.Tensor, recon_mean: torch.Tensor, post: DiagonalGaussian) -> dict:
        """Per-sample terms in nats (B,): nll = -log P(x|z), kl, and the bits/dim of -ELBO."""
        nll = -self.log_likelihood(images, recon_mean)
        kl = post.kl()
        return {"nll": nll, "kl": kl, "bpd": bits_per_dim(nll + kl, self.num_dims)}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, sample: bool = False) -> torch.Tensor:
        post = self.encode(images)
        return self.decode(post.sample() if sample else post.mode()).clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images decoded from prior latents N(0, temperature^2 I): (n, C, H, W) in [-1, 1]."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn((n, *self.latent_shape), generator=g) * temperature
        return self.decode(z.to(self.device)).clamp(-1, 1)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8, mode: str = "slerp") -> torch.Tensor:
        """Decode a path between the posterior means of x0 and x1 (B, C, H, W each):
        (B, steps, C, H, W), endpoints included. slerp suits Gaussian latents; lerp is linear."""
        if mode not in ("slerp", "lerp"):
            raise ValueError(f"mode must be 'slerp' or 'lerp', got {mode!r}")
        z0, z1 = self.encode(x0).mode(), self.encode(x1).mode()  # (B, zc, h, w)
        t = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1, 1, 1)
        a, b = z0[:, None], z1[:, None]  # (B, 1, zc, h, w)
        if mode == "lerp":
            z = (1 - t) * a + t * b
        else:
            fa, fb = a.flatten(2), b.flatten(2)
            cos = (F.normalize(fa, dim=-1) * F.normalize(fb, dim=-1)).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6)
            omega = torch.acos(cos).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
            so = torch.sin(omega)
            z = torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
        B = z.shape[0]
        return self.decode(z.flatten(0, 1)).clamp(-1, 1).view(B, steps, *x0.shape[1:])

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor, sample: bool = False,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents for latent diffusion: (B, zc, h, w) = posterior mean (or a sample) * scaling_factor."""
        post = self.encode(images)
        return (post.sample(generator) if sample else post.mode()) * self.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(latents / self.config.scaling_factor).clamp(-1, 1)

    # ----------------------------------------------------------------- training contract
    def loss(self, batch):
        images = batch_images(batch).to(self.device)
        recon, post = self(images)
        terms = self.elbo_terms(images, recon, post)
        beta = self.beta()
        D = self.num_dims
        total = (terms["nll"] + beta * terms["kl"]).mean() / D  # nats per dim
        if self.training:
            self.step += 1
        with torch.no_grad():
            logs = {"recon": float(terms["nll"].mean()) / D, "kl": float(terms["kl"].mean()) / D, "beta": beta,
                    "bpd": float(terms["bpd"].mean()), "psnr": float(psnr(recon, images).mean()),
                    "log_scale": float(self.log_scale.mean())}
        return total, logs

    @torch.no_grad()
    def evaluate(self, batch, seed: int = 0) -> dict[str, float]:
        """bits/dim of the negative ELBO (one seeded posterior sample, beta = 1), its
        reconstruction and KL parts, and the PSNR of the posterior-mean reconstruction."""
        images = batch_images(batch).to(self.device)
        post = self.encode(images)
        g = torch.Generator().manual_seed(seed)
        terms = self.elbo_terms(images, self.decode(post.sample(g)), post)
        recon = self.decode(post.mode()).clamp(-1, 1)
        D = self.num_dims
        return {"bpd": float(terms["bpd"].mean()), "recon_bpd": float(bits_per_dim(terms["nll"], D).mean()),
                "kl_bpd": float(bits_per_dim(terms["kl"], D).mean()), "psnr": float(psnr(recon, images).mean()),
                "mse": float(F.mse_loss(recon, images))}

    def example_batch(self, batch_size: int = 2, device="cpu"):
        return {"image": example_images(self.config, batch_size, device)}

    @torch.no_grad()
    def sample_images(self, n: int = 16, seed: int = 0) -> torch.Tensor:
        """Prior samples for the training loop's PNG grids."""
        return self.sample(n, seed=seed)


# ------------------------------------------------------------------------- presets
register_preset("vae_tiny", VAE, "16 px -> latents (2, 4, 4); for tests",
                img_size=16, ch=8, ch_mult=(1, 2, 2), groups=8, latent_channels=2, kl_warmup_steps=10)
register_preset("vae_32", VAE, "32 px -> latents (4, 8, 8) for latent diffusion",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2), latent_channels=4)
register_preset("vae_32_f2", VAE, "32 px -> latents (4, 16, 16): 2x2-pixel latents that keep small shapes",
                img_size=32, patch=2, ch=64, ch_mult=(1,), num_res_blocks=2, latent_channels=4)
register_preset("vae_32_z8x4x4", VAE, "32 px -> latents (8, 4, 4): a stronger bottleneck for prior sampling",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2, 2), latent_channels=8)
register_preset("vae_32_tf", VAE, "vae_32 with a 2-block transformer bottleneck at 8x8",
                img_size=32, patch=2, ch=32, ch_mult=(1, 2), latent_channels=4, bottleneck="transformer")
