"""Denoising diffusion (DDPM / DDIM / DPM-Solver++ / Euler sampling) with a UNet or DiT denoiser,
in pixel space or on a Gaussian VAE's latents, unconditional, class- or text-conditional,
with classifier-free guidance.

The noise schedule and the samplers are diffusers' schedulers, chosen by name
(`mmgen.schedulers.make_scheduler`, shared by this model's loss and the pipeline); the sampling loop lives in `mmgen.pipelines.ddpm` (DDPMPipeline), short
on purpose so it can be read and changed. This file holds the model: config, denoiser,
conditioning, `loss` and presets. The network predicts eps, v or x0 (`prediction`); the loss is a plain or min-SNR
(gamma = 5) weighted MSE.

Text conditioning comes from one of three encoders (`text_encoder`):
  builtin  a small bidirectional transformer over UTF-8 bytes, trained jointly;
  clip     the text tower of a trained mmgen CLIP;
  gpt      the hidden states of a trained mmgen GPT decoder;
frozen, or fine-tuned with the denoiser when `train_text_encoder` is set. The encoder is
copied into this model's weights (its config into config.json), so a checkpoint is
self-contained: `text_encoder_path` is only read when the model is first built.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import config_to_dict
from ..registry import register_model, register_preset
from ..schedulers import BETA_SCHEDULES, PREDICTIONS, SCHEDULERS, make_scheduler
from .base import Model
from .dit import DiT, DiTConfig
from .text_encoders import ByteTextEncoder, PretrainedTextEncoder, TextEncoderConfig
from .unet import UNet, UNetConfig

WEIGHTINGS = ("none", "min_snr")
CONDITIONINGS = ("none", "class", "text")
TEXT_ENCODERS = ("builtin", "clip", "gpt")
DENOISERS = ("unet", "dit")


# ----------------------------------------------------------------------------- config
@dataclass
class DDPMConfig:
    img_size: int = 32
    in_chans: int = 3
    denoiser: str = "unet"  # unet | dit
    unet: UNetConfig = field(default_factory=UNetConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    prediction: str = "eps"  # eps | v | x0
    loss_weighting: str = "none"  # none | min_snr
    min_snr_gamma: float = 5.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # linear | scaled_linear | squaredcos_cap_v2
    clip_sample: bool = True  # clip predicted x0 to [-1, 1] in ddpm/ddim steps (pixel space)
    scheduler: str = "ddim"  # default sampler: ddpm | ddim | dpm++ | euler
    sample_steps: int = 50  # default of the pipeline
    guidance_scale: float = 3.0  # default of the pipeline; 1 = no guidance
    conditioning: str = "none"  # none | class | text
    num_classes: int = 10
    class_names: tuple[str, ...] = ()  # lets the pipeline take class names as prompts
    cond_dim: int = 128  # width of the class / pooled-text vector given to the denoiser
    cond_dropout: float = 0.1  # classifier-free guidance: drop the condition this often in training
    # shapes captions: read "X below Y" as "Y above X" and "X right of Y" as "Y left of X" (the same
    # scene), so the object named first is always the upper / left one (mmgen.data.shapes.canonical_caption)
    canonical_relations: bool = False
    text_encoder: str = "builtin"  # builtin | clip | gpt
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    text_encoder_path: str | None = None  # clip/gpt: checkpoint dir read when the model is first built
    text_encoder_meta: dict | None = None  # clip/gpt: filled in from that checkpoint (model_type, config)
    train_text_encoder: bool = False  # clip/gpt: fine-tune the encoder with the denoiser instead of freezing it
    clip_path: str = ""  # CLIP checkpoint (shipped name or dir) that reranks candidates; "" = the frozen text encoder's CLIP, if any
    vae_path: str | None = None  # latent diffusion: a Gaussian VAE checkpoint dir read at first build
    vae_meta: dict | None = None  # filled in from that checkpoint; the VAE weights live in ours
    latent_scale: float = 1.0  # latents are multiplied by this before diffusion (SD's 0.18215)
    # train on posterior samples (Stable Diffusion's VAE, whose posterior std is tiny) or on
    # posterior means: a VAE trained with a full KL weight has posterior noise far above the
    # spread of its means (vae_shapes_f2: std 0.95 against 0.32), which a denoiser cannot learn
    latent_sample: bool = True
    sample_prompts: tuple[str, ...] = ()  # prompts of the training sample grid (text conditioning)

    def __post_init__(self):
        for name, value, allowed in (("denoiser", self.denoiser, DENOISERS), ("prediction", self.prediction, PREDICTIONS),
                                     ("loss_weighting", self.loss_weighting, WEIGHTINGS),
                                     ("scheduler", self.scheduler, SCHEDULERS),
                                     ("conditioning", self.conditioning, CONDITIONINGS),
                                     ("text_encoder", self.text_encoder, TEXT_ENCODERS),
                                     ("beta_schedule", self.beta_schedule, BETA_SCHEDULES)):
            if value not in allowed:
                raise ValueError(f"DDPMConfig.{name} must be one of {allowed}, got {value!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.conditioning == "class" and self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes={self.num_classes}")
        if self.vae_path is not None or self.vae_meta is not None:
            if self.clip_sample:
                raise ValueError("latent diffusion (vae_path set) needs clip_sample=False: latents are not in [-1, 1]")


# ----------------------------------------------------------------------------- model
_COMPANIONS = (("vae_path", "vae_meta"), ("text_encoder_path", "text_encoder_meta"))


def _companion_meta(path: str | None, meta: dict | None, path_field: str) -> dict | None:
    """{"model_type", "config"} of a frozen sub-model: read from its checkpoint at `path` (a
    directory or a shipped name), or from a registered preset ({"preset": name}, tests)."""
    from ..checkpoint import read_config, resolve_companion
    from ..registry import get_preset, preset_config
    if meta is not None and "preset" in meta:
        cls = get_preset(meta["preset"]).model_cls
        cfg = cls.resolve_config(preset_config(meta["preset"]))
        return {"model_type": cls.model_type, "config": json.loads(json.dumps(config_to_dict(cfg)))}
    if meta is None and path is not None:
        full = read_config(resolve_companion(path, None, path_field[:-5]))
        return {"model_type": full["model_type"], "config": full["config"]}
    return meta


def _build_from_meta(meta: dict):
    """A sub-model (random weights) from {"model_type", "config"}, what checkpoints record."""
    from ..config import config_from_dict
    from ..registry import get_family
    cls = get_family(meta["model_type"])
    return cls(config_from_dict(cls.config_class, meta["config"]))


@register_model("ddpm")
class DDPM(Model):
    config_class = DDPMConfig
    companion_fields = ("clip_path",)  # read when sampling; vae_path / text_encoder_path are copied in at build

    @classmethod
    def resolve_config(cls, config: DDPMConfig) -> DDPMConfig:
        """The config with the frozen sub-models' configs recorded (read from vae_path /
        text_encoder_path, or expanded from a preset), so that the checkpoint is
        self-contained. `config` is left as it was."""
        import dataclasses
        return dataclasses.replace(config, **{m: _companion_meta(getattr(config, p), getattr(config, m), p)
                                              for p, m in _COMPANIONS})

    def __init__(self, config: DDPMConfig):
        super().__init__(config)
        for p, m in _COMPANIONS:
            meta = getattr(config, m)
            if (getattr(config, p) is not None and meta is None) or (meta is not None and "preset" in meta):
                raise ValueError(f"DDPMConfig.{m} is not resolved yet: build the model with mmgen.create_model(...) "
                                 f"or DDPM.create(config), which read {p} once before the model is built")
        if config.train_text_encoder and not (config.conditioning == "text" and config.text_encoder != "builtin"):
            raise ValueError("train_text_encoder fine-tunes a CLIP / GPT text encoder: it needs conditioning='text' "
                             "and text_encoder 'clip' or 'gpt' (the builtin encoder always trains)")
        if config.conditioning == "text" and config.text_encoder != "builtin" and config.text_encoder_meta is None:
            raise ValueError(f"DDPMConfig.text_encoder_path must name a checkpoint directory "
                             f"(text_encoder={config.text_encoder!r})")
        cfg = config
        # latent diffusion: a frozen VAE, its weights stored with ours
        self.vae = None
        chans, size = cfg.in_chans, cfg.img_size
        if cfg.vae_path is not None or cfg.vae_meta is not None:
            self.vae = _build_from_meta(cfg.vae_meta).requires_grad_(False).eval()
            chans, size = self._latent_shape()
        self.latent_chans, self.latent_size = chans, size
        # conditioning
        context_dim = None
        self.class_embed = self.text_encoder = self.text_proj = None
        if cfg.conditioning == "class":
            self.class_embed = nn.Embedding(cfg.num_classes + 1, cfg.cond_dim)  # last row = "no class"
            nn.init.normal_(self.class_embed.weight, std=0.02)
        elif cfg.conditioning == "text":
            if cfg.text_encoder == "builtin":
                self.text_encoder = ByteTextEncoder(cfg.text)
            else:
                self.text_encoder = PretrainedTextEncoder(cfg.text_encoder, _build_from_meta(cfg.text_encoder_meta),
                                                          trainable=cfg.train_text_encoder)
            context_dim = self.text_encoder.width
            self.text_proj = nn.Linear(context_dim, cfg.cond_dim)
        cond_dim = cfg.cond_dim if cfg.conditioning != "none" else None
        if cfg.denoiser == "unet":
            self.net = UNet(cfg.unet, img_size=size, in_chans=chans, cond_dim=cond_dim, context_dim=context_dim)
        else:
            self.net = DiT(cfg.dit, img_size=size, in_chans=chans, cond_dim=cond_dim, context_dim=context_dim)
        self.noise_scheduler = make_scheduler("ddpm", num_train_timesteps=cfg.num_train_timesteps,
                                              beta_schedule=cfg.beta_schedule, prediction=cfg.prediction,
                                              clip_sample=cfg.clip_sample)
        self.register_buffer("alphas_cumprod", self.noise_scheduler.alphas_cumprod.float().clone(), persistent=False)

    # -- frozen sub-models (VAE, CLIP/GPT text encoder), copied into our own checkpoint
    def load_sources(self) -> None:
        """A freshly built model takes the frozen VAE's / text encoder's weights from
        vae_path / text_encoder_path; afterwards they live in this model's own weights."""
        from ..checkpoint import load_companion
        cfg = self.config
        frozen_text = getattr(self.text_encoder, "model", None) if cfg.conditioning == "text" else None
        subs = (("vae_path", self.vae), ("text_encoder_path", frozen_text))
        for field_name, sub in subs:
            path = getattr(cfg, field_name)
            if path is not None and sub is not None:
                sub.load_state_dict(load_companion(path, None, field_name[:-5]).state_dict())

    def _latent_shape(self) -> tuple[int, int]:
        with torch.no_grad():
            z = self._vae_encode(torch.zeros(1, self.config.in_chans, self.config.img_size, self.config.img_size),
                                 sample=False)
        return z.shape[1], z.shape[2]

    def _vae_encode(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Images -> diffusion latents: the VAE's (scaled) posterior sample or mean, times latent_scale."""
        if not hasattr(self.vae, "encode_latents"):
            raise TypeError(f"latent diffusion needs a Gaussian VAE with encode_latents/decode_latents, "
                            f"got {type(self.vae).__name__}")
        return self.vae.encode_latents(x, sample=sample) * self.config.latent_scale

    def _vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode_latents(z / self.config.latent_scale).clamp(-1, 1)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()
        return self

    # -- conditioning
    def _labels_from(self, prompts) -> torch.Tensor:
        names = {n.lower(): i for i, n in enumerate(self.config.class_names)}
        out = []
        for p in prompts:
            if isinstance(p, str):
                if p.lower() not in names:
                    raise ValueError(f"unknown class {p!r}; this model knows {list(self.config.class_names)} "
                                     f"(or pass integer labels 0..{self.config.num_classes - 1})")
                p = names[p.lower()]
            p = int(p)
            if not 0 <= p < self.config.num_classes:
                raise ValueError(f"class label must be in [0, {self.config.num_classes}), got {p}")
            out.append(p)
        return torch.tensor(out, dtype=torch.long, device=self.device)

    def encode_condition(self, prompts=None, labels=None, *, drop: torch.Tensor | None = None,
                         unconditional: bool = False, batch_size: int | None = None) -> dict[str, Any]:
        """The denoiser's condition kwargs (cond, context, context_mask). `drop` (B,) bool
        replaces those rows by the null condition (empty prompt / null class)."""
        cfg = self.config
        if cfg.conditioning == "none":
            return {}
        if cfg.conditioning == "class":
            if unconditional:
                labels = torch.full((batch_size,), cfg.num_classes, dtype=torch.long, device=self.device)
            labels = labels.to(self.device).long()
            if drop is not None:
                labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels)
            return {"cond": self.class_embed(labels)}
        texts = [""] * batch_size if unconditional else list(prompts)
        if cfg.canonical_relations:
            from ..data.shapes import canonical_caption
            texts = [canonical_caption(t) for t in texts]
        if drop is not None:
            texts = ["" if d else t for t, d in zip(texts, drop.tolist())]
        states, mask, pooled = self.text_encoder(texts, self.device)
        return {"cond": self.text_proj(pooled), "context": states, "context_mask": mask}

    # -- training
    def snr(self, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(t.device)[t]
        return a / (1 - a)

    def loss(self, batch):
        cfg = self.config
        x0 = batch["image"].to(self.device)
        if x0.ndim != 4 or x0.shape[1] != cfg.in_chans or x0.shape[-1] != cfg.img_size:
            raise ValueError(f"expected images (B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}), "
                             f"got {tuple(x0.shape)}")
        if self.vae is not None:
            with torch.no_grad():
                x0 = self._vae_encode(x0, sample=cfg.latent_sample)
        B = x0.shape[0]
        noise = torch.randn_like(x0)
        t = torch.randint(0, cfg.num_train_timesteps, (B,), device=x0.device)
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        target = {"eps": noise, "x0": x0}.get(cfg.prediction)
        if target is None:
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        drop = torch.rand(B, device=x0.device) < cfg.cond_dropout if self.training else None
        cond = self.encode_condition(batch.get("caption"), batch.get("label"), drop=drop)
        pred = self.net(xt, t.float(), **cond)
        mse = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
        if cfg.loss_weighting == "min_snr":
            snr = self.snr(t)
            clipped = snr.clamp(max=cfg.min_snr_gamma)
            # min-SNR-gamma (Hang et al., 2023), written for each prediction target
            w = {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[cfg.prediction]
            loss = (w * mse).mean()
        else:
            loss = mse.mean()
        return loss, {"loss": loss.item(), "mse": mse.mean().item()}

    def example_batch(self, batch_size: int = 2, device="cpu"):
        cfg = self.config
        g = torch.Generator().manual_seed(0)
        img = torch.rand(batch_size, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g) * 2 - 1
        colours, shapes = ["red", "green", "blue"], ["circle", "square", "triangle"]
        caps = [f"a {colours[i % 3]} {shapes[(i // 3) % 3]}" for i in range(batch_size)]
        labels = torch.arange(batch_size) % cfg.num_classes
        return {"image": img.to(device), "label": labels.to(device), "caption": caps}

    # -- sampling
    def guided_prediction(self, x, t, cond: dict, uncond: dict | None, guidance_scale: float):
        """Classifier-free guidance with the conditional and unconditional passes batched:
        uncond + s * (cond - uncond). With uncond None (no guidance) one conditional pass."""
        tt = t.expand(x.shape[0]) if t.ndim == 0 else t
        if uncond is None:
            return self.net(x, tt, **cond)
        both = _cat_conditions(cond, uncond)
        out = self.net(torch.cat([x, x]), torch.cat([tt, tt]), **both)
        c, u = out.chunk(2)
        return u + guidance_scale * (c - u)

    def eps_and_x0(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's prediction `out` (eps, v or x0) at the variance-preserving input x and
        integer timesteps t (a scalar or (B,)) as both the noise and the image it implies."""
        t = torch.as_tensor(t, device=x.device)
        idx = t.round().long() if t.is_floating_point() else t.long()
        a = self.alphas_cumprod.to(x.device)[idx].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        sa, s1a = a.sqrt(), (1 - a).sqrt()
        pred = self.config.prediction
        if pred == "eps":
            return out, (x - s1a * out) / sa
        if pred == "x0":
            return (x - sa * out) / s1a, out
        return s1a * x + sa * out, sa * x - s1a * out  # v = sa * eps - s1a * x0

    def clip_prediction(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prediction (eps, v or x0) whose implied x0 is clipped to [-1, 1], given the
        variance-preserving input x at integer timestep t. At the first steps of a cosine
        schedule (alpha_t ~ 0) a small eps error means a huge x0; this keeps it in range."""
        x0 = self.eps_and_x0(out, x, t)[1].clamp(-1, 1)
        pred = self.config.prediction
        if pred == "x0":
            return x0
        a = self.alphas_cumprod[int(round(float(t)))].to(x.dtype)
        sa, s1a = a.sqrt(), (1 - a).sqrt()
        eps = (x - sa * x0) / s1a
        return eps if pred == "eps" else sa * eps - s1a * x0

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The sampler's result (pixels or VAE latents) -> images in [-1, 1]."""
        return x.clamp(-1, 1) if self.vae is None else self._vae_decode(x)



def _cat_conditions(a: dict, b: dict) -> dict:
    """Stack two condition dicts along the batch, right-padding text contexts (and their
    masks) to the longer of the two."""
    out = {}
    for k in a:
        x, y = a[k], b[k]
        if k in ("context", "context_mask") and x.shape[1] != y.shape[1]:
            S = max(x.shape[1], y.shape[1])
            pad = lambda z: F.pad(z, (0, 0, 0, S - z.shape[1]) if z.ndim == 3 else (0, S - z.shape[1]))
            x, y = pad(x), pad(y)
        out[k] = torch.cat([x, y])
    return out


# ----------------------------------------------------------------------------- presets
_SHAPES_PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow diamond",
                   "a red circle above a blue square", "a cyan cross left of a magenta triangle")

register_preset("ddpm_unet_tiny", DDPM, "tiny pixel UNet, unconditional (tests)",
                img_size=16, unet={"base_ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_res": (8,),
                                     "num_heads": 2, "groups": 4})
register_preset("ddpm_unet_class_tiny", DDPM, "tiny pixel UNet, class-conditional (tests)",
                img_size=16, conditioning="class", num_classes=10, cond_dim=32,
                unet={"base_ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 2,
                      "groups": 4})
register_preset("ddpm_unet_text_tiny", DDPM, "tiny pixel UNet, text-conditional with the built-in encoder (tests)",
                img_size=16, conditioning="text", cond_dim=32, text={"embed_dim": 32, "depth": 1, "num_heads": 2},
                unet={"base_ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 2,
                      "groups": 4})
register_preset("ddpm_dit_tiny", DDPM, "tiny pixel DiT, text-conditional (tests)",
                img_size=16, denoiser="dit", conditioning="text", cond_dim=32, prediction="v",
                loss_weighting="min_snr", text={"embed_dim": 32, "depth": 1, "num_heads": 2},
                dit={"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2})
# The shipped checkpoint: text-conditional shapes, 32x32 RGB, trained on a CPU in minutes.
register_preset("ddpm_unet_shapes", DDPM, "text-conditional pixel UNet for the shapes dataset (32x32)",
                img_size=32, conditioning="text", cond_dim=128, sample_prompts=_SHAPES_PROMPTS,
                text={"embed_dim": 128, "depth": 2, "num_heads": 4, "context_length": 64},
                unet={"base_ch": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 4,
                      "groups": 8})
register_preset("ddpm_unet_shapes_latent", DDPM,
                "text-conditional UNet on a Gaussian VAE's (4, 8, 8) latents of shapes (set vae_path)",
                img_size=32, conditioning="text", cond_dim=128, clip_sample=False, sample_prompts=_SHAPES_PROMPTS,
                text={"embed_dim": 128, "depth": 2, "num_heads": 4, "context_length": 64},
                unet={"base_ch": 64, "ch_mult": (1, 2), "num_res_blocks": 2, "attn_res": (8, 4), "num_heads": 4,
                      "groups": 8})
register_preset("ddpm_unet_shapes_latent_f2", DDPM,
                "ddpm_unet_shapes without its 32x32 level, on a Gaussian VAE's (4, 16, 16) latents (set vae_path)",
                img_size=32, conditioning="text", cond_dim=128, clip_sample=False, sample_prompts=_SHAPES_PROMPTS,
                text={"embed_dim": 128, "depth": 2, "num_heads": 4, "context_length": 64},
                unet={"base_ch": 64, "ch_mult": (1, 1), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 4,
                      "groups": 8})
register_preset("ddpm_unet_animal_mnist", DDPM,
                "class-conditional pixel UNet for animal-mnist as the dataset serves it (3x32x32, the CIFAR stand-in)",
                img_size=32, in_chans=3, conditioning="class", num_classes=10, cond_dim=128,
                class_names=("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"),
                unet={"base_ch": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 4,
                      "groups": 8})
register_preset("ddpm_dit_emoji", DDPM, "text-conditional DiT for emoji (32x32 RGB), adaLN + cross-attention",
                img_size=32, denoiser="dit", conditioning="text", cond_dim=192, prediction="v",
                loss_weighting="min_snr", text={"embed_dim": 128, "depth": 2, "num_heads": 4, "context_length": 64},
                dit={"patch_size": 2, "embed_dim": 192, "depth": 6, "num_heads": 3})
register_preset("ddpm_unet_emoji", DDPM, "text-conditional pixel UNet for emoji (32x32 RGB), v-prediction + min-SNR",
                img_size=32, conditioning="text", cond_dim=128, prediction="v", loss_weighting="min_snr",
                text={"embed_dim": 128, "depth": 2, "num_heads": 4, "context_length": 64},
                unet={"base_ch": 64, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_res": (8,), "num_heads": 4,
                      "groups": 8})
register_preset("ddpm_dit_latent_tiny", DDPM, "tiny latent DiT on a (random) vae_tiny's latents, class-conditional (tests)",
                img_size=16, denoiser="dit", conditioning="class", cond_dim=32, clip_sample=False,
                vae_meta={"preset": "vae_tiny"}, dit={"patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2})
