"""Fréchet distance (FID's formula) and KID (kernel inception distance's formula) on
features of a given encoder.

FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), computed in float64 with the symmetric
form tr((S1^1/2 S2 S1^1/2)^1/2), which needs only eigendecompositions of symmetric PSD
matrices (no scipy.linalg.sqrtm and its complex round-off).
KID = the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets (Binkowski et al., 2018)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {tuple(feats.shape)}")
    f = feats.double()
    mu = f.mean(0)
    x = f - mu
    return mu, x.T @ x / (f.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(a, b) -> float:
    """FD between two feature sets (N, D) / (M, D), or two (mu, sigma) pairs."""
    mu1, s1 = gaussian_stats(a) if isinstance(a, torch.Tensor) else (a[0].double(), a[1].double())
    mu2, s2 = gaussian_stats(b) if isinstance(b, torch.Tensor) else (b[0].double(), b[1].double())
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    r1 = _sqrt_psd(s1)
    covmean_trace = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp(min=0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * covmean_trace
    return float(fd.clamp(min=0))


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor, *, num_subsets: int = 50,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 with the cubic polynomial kernel."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    a, b, d = a.double(), b.double(), a.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=g)[:m]]
        y = b[torch.randperm(b.shape[0], generator=g)[:m]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(float(mmd))
    t = torch.tensor(vals)
    return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0


def _encoder_fn(encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature function of an encoder: CLIP -> its image tower's pooled features; a timm-style
    encoder (our ViT / Swin) -> forward_head(forward_features(x), pre_logits=True); else encoder(x)."""
    if hasattr(encoder, "image_features"):
        return encoder.image_features
    if hasattr(encoder, "forward_features") and hasattr(encoder, "forward_head"):
        return lambda x: encoder.forward_head(encoder.forward_features(x), pre_logits=True)
    if callable(encoder):
        return encoder
    raise TypeError(f"cannot extract features with a {type(encoder).__name__}")


@torch.no_grad()
def image_features(encoder, images: torch.Tensor, *, batch_size: int = 256, image_size: int | None = None,
                   channels: int | None = None) -> torch.Tensor:
    """Features (N, D) of images (N, C, H, W) in [-1, 1]; resized to `image_size` (bilinear) and
    grey <-> RGB converted to `channels` when the encoder wants other inputs."""
    fn = _encoder_fn(encoder)
    was = getattr(encoder, "training", False)
    if hasattr(encoder, "eval"):
        encoder.eval()
    dev = next(encoder.parameters()).device if hasattr(encoder, "parameters") else images.device
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(dev).float()
            if channels is not None and x.shape[1] != channels:
                x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1) if channels in (1, 3) else None
                if x is None:
                    raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
            if image_size is not None and x.shape[-1] != image_size:
                x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
            out.append(fn(x).float().cpu())
    finally:
        if hasattr(encoder, "train"):
            encoder.train(was)
    return torch.cat(out)


def fd_kid(encoder, real: torch.Tensor, fake: torch.Tensor, **kw) -> dict[str, float]:
    """FD_ours and KID_ours between real and generated images (both (N, C, H, W) in [-1, 1])."""
    fr, ff = image_features(encoder, real, **kw), image_features(encoder, fake, **kw)
    kid, kid_std = kernel_inception_distance(fr, ff)
    return {"fd_ours": frechet_distance(fr, ff), "kid_ours": kid, "kid_ours_std": kid_std}
