"""Diffusion generation: a DDPM model (denoiser + text/class conditioning) and a diffusers
scheduler, in one short loop (`DDPMPipeline.denoise`), then an optional CLIP rerank.

    pipe = DDPMPipeline.from_pretrained("checkpoints/ddpm_shapes")
    out = pipe(["a green cross"], num_images=4, steps=25, guidance=3, candidates=4, seed=0)

The reranker is a CLIP passed as clip=, else the checkpoint's `clip_path`, else the CLIP whose
frozen text tower conditions the model (text_encoder="clip" checkpoints carry that whole CLIP;
a fine-tuned tower no longer matches its image tower, so it does not rerank), else none.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..models.base import eval_mode
from ..schedulers import SCHEDULERS, make_scheduler
from ..models.text_encoders import PretrainedTextEncoder
from .base import Pipeline, ProgressReporter, _finite, timed
from .prompts import PromptReader, quiet


class DDPMPipeline(Pipeline):
    """A DDPM model + a scheduler chosen per call + an optional CLIP reranker."""

    kind = "ddpm"
    model_type = "ddpm"

    def __init__(self, model, clip=None, *, name: str = ""):
        if clip is None:  # the CLIP that conditions the model can rerank its images too
            enc = getattr(model, "text_encoder", None)
            if isinstance(enc, PretrainedTextEncoder) and enc.kind == "clip" and not enc.trainable:
                clip = enc.model
        super().__init__(model, clip=clip, name=name)

    @classmethod
    def _from_model(cls, model, ckpt_dir: Path, clip=None):
        if clip is None and model.config.clip_path:
            from ..checkpoint import load_companion
            clip = load_companion(model.config.clip_path, ckpt_dir, "clip", expect="clip", owner="DDPM")
        return cls(model, clip=clip)

    def parts(self) -> list:
        return [self.model] + ([self.clip] if self.clip is not None and self.clip is not self._encoder_clip() else [])

    def _encoder_clip(self):
        enc = getattr(self.model, "text_encoder", None)
        return enc.model if isinstance(enc, PretrainedTextEncoder) else None

    def readers(self) -> list[PromptReader]:
        cfg, enc = self.model.config, self.model.text_encoder
        out = []
        if cfg.conditioning == "text":
            if isinstance(enc, PretrainedTextEncoder) and enc.kind == "clip":
                out.append(PromptReader("the CLIP text encoder", enc.model.tokenizer.tokenizer,
                                        corpus=enc.model.config.tokenizer_captions.split(":")[0],
                                        max_tokens=enc.model.tokenizer.context_length))
            else:  # byte-level: reads any text, cuts what is longer than its context with a warning
                ctx = cfg.text.context_length if cfg.text_encoder == "builtin" else enc.model.config.context_length
                out.append(PromptReader("the text encoder", enc.tokenizer, max_tokens=ctx, truncates=True))
        elif cfg.conditioning == "class":
            return []
        if self.clip is not None:
            reader = self.clip_reader()
            if self.clip is self._encoder_clip():
                reader.name = "the CLIP reranker (the text encoder's CLIP)"
            out.append(reader)
        return out

    def check_prompts(self, prompts, truncate: bool = False) -> list[str]:
        cfg = self.model.config
        if cfg.conditioning == "class":
            self.model._labels_from([int(p) if isinstance(p, str) and p.isdigit() else p for p in prompts])
            return []
        notes = super().check_prompts(prompts, truncate)
        if cfg.conditioning == "none":
            notes.insert(0, "this model is unconditional: the prompts only count the rows of images")
        return notes

    def check_options(self, steps=None, scheduler=None, eta: float = 0.0, **kwargs) -> None:
        if kwargs:
            raise TypeError(f"DDPMPipeline takes no option {', '.join(sorted(kwargs))}")
        T = self.model.config.num_train_timesteps
        if steps is not None and steps > T:
            raise ValueError(f"steps={steps} is more than the {T} timesteps this model was trained with")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        _finite("eta", eta, low=0.0)

    # ---------------------------------------------------------------- the sampling loop
    @torch.no_grad()
    def denoise(self, cond: dict, uncond: dict | None, n: int, *, steps: int, guidance: float, scheduler: str,
                generator: torch.Generator, eta: float = 0.0, on_step=None) -> torch.Tensor:
        """The whole diffusion sampling loop: pure noise -> n samples (pixels or VAE latents).

        cond / uncond: the denoiser's condition kwargs (model.encode_condition) for the n rows;
        uncond None samples without guidance."""
        m, cfg = self.model, self.model.config
        sched = make_scheduler(scheduler, num_train_timesteps=cfg.num_train_timesteps,
                               beta_schedule=cfg.beta_schedule, prediction=cfg.prediction,
                               clip_sample=cfg.clip_sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # DPM-Solver's numpy warning
            sched.set_timesteps(steps, device=m.device)
        step_kw = {"generator": generator}
        if scheduler == "ddim":  # with clip_sample, recompute eps from the clipped x0 (as DDPM's posterior does)
            step_kw = {"eta": eta, "use_clipped_model_output": True, **({"generator": generator} if eta > 0 else {})}
        # ddpm/ddim clip x0 themselves and dpm++ thresholds it; euler cannot: clip its x0 here
        clip_x0 = cfg.clip_sample and scheduler == "euler"
        x = torch.randn((n, m.latent_chans, m.latent_size, m.latent_size), generator=generator).to(m.device)
        x = x * sched.init_noise_sigma  # (n, C, H, W) pure noise
        for t in sched.timesteps:
            xin = sched.scale_model_input(x, t)
            out = m.guided_prediction(xin, t.to(m.device).float(), cond, uncond, guidance)  # cond + uncond batched
            if clip_x0:
                out = m.clip_prediction(out, xin, t)
            x = sched.step(out, t, x, **step_kw).prev_sample
            if on_step is not None:
                on_step()
        return x

    def conditions(self, prompts, guidance: float) -> tuple[dict, dict | None]:
        """The denoiser's condition kwargs for these prompts (text, class names or labels) and
        the null condition (None when guidance is 1: no unconditional pass)."""
        m, cfg = self.model, self.model.config
        n = len(prompts)
        if cfg.conditioning == "none":
            return {}, None
        if cfg.conditioning == "class":
            labels = [int(p) if isinstance(p, str) and p.isdigit() else p for p in prompts]
            cond = m.encode_condition(labels=m._labels_from(labels))
        else:
            readers = self.readers()
            texts = [readers[0].clean(p) for p in prompts]
            cond = quiet(m.encode_condition, prompts=texts)
        uncond = m.encode_condition(unconditional=True, batch_size=n) if guidance != 1.0 else None
        return cond, uncond

    @torch.no_grad()
    def sample(self, prompts=None, *, num_images: int | None = None, steps: int | None = None,
               guidance: float | None = None, scheduler: str | None = None, seed: int | None = 0,
               generator: torch.Generator | None = None, eta: float = 0.0, progress=False,
               return_latents: bool = False, batch_size: int = 64, truncate: bool = False) -> torch.Tensor:
        """Float images (N, C, H, W) in [-1, 1], one per prompt (text / class name / label), or
        num_images for an unconditional model; no reranking, no prompt checks."""
        m, cfg = self.model, self.model.config
        steps = steps or cfg.sample_steps
        guidance = cfg.guidance_scale if guidance is None else float(guidance)
        scheduler = scheduler or cfg.scheduler
        self.check_options(steps=steps, scheduler=scheduler, eta=eta)
        if cfg.conditioning == "none":
            prompts = [""] * (num_images if num_images is not None else len(prompts or [None]))
        elif prompts is None or isinstance(prompts, (str, int)):
            prompts = [prompts] if prompts is not None else []
        if not prompts:
            raise ValueError(f"this model is {cfg.conditioning}-conditional: pass "
                             f"{'prompts' if cfg.conditioning == 'text' else 'class labels'}")
        if cfg.conditioning == "text" and any(not isinstance(p, str) for p in prompts):
            raise TypeError("text prompts must be strings")
        if generator is None:
            generator = torch.Generator().manual_seed(int(seed)) if seed is not None else torch.Generator()
            if seed is None:
                generator.seed()
        batches = range(0, len(prompts), batch_size)
        tick = ProgressReporter(progress, len(batches) * steps, f"{scheduler} x{steps}, {len(prompts)} image(s)")
        enc = getattr(m, "text_encoder", None)
        cut = isinstance(enc, PretrainedTextEncoder) and enc.kind == "clip" and truncate
        try:
            if cut:
                enc.model.tokenizer.truncate = True
            outs = []
            with eval_mode(m):
                for i in batches:
                    chunk = prompts[i:i + batch_size]
                    cond, uncond = self.conditions(chunk, guidance)
                    x = self.denoise(cond, uncond, len(chunk), steps=steps, guidance=guidance, scheduler=scheduler,
                                     generator=generator, eta=eta, on_step=tick)
                    outs.append(x if return_latents else m.decode(x))
        finally:
            tick.close()
            if cut:
                enc.model.tokenizer.truncate = False
        return torch.cat(outs)

    def _generate(self, prompts, n, *, seed, guidance, steps, temperature, top_k, top_p, progress, truncate,
                  batch_size, scheduler=None, eta=0.0) -> torch.Tensor:
        rows = [p for p in prompts for _ in range(n)]  # prompt-major
        return self.sample(rows, num_images=len(rows), steps=steps, guidance=guidance, scheduler=scheduler,
                           seed=seed, eta=eta, progress=progress, batch_size=batch_size, truncate=truncate).float().cpu()

    def estimate_seconds(self, num_prompts: int, num_images: int = 4, candidates: int = 1, guidance=None,
                         steps=None, batch_size: int = 64, **kwargs) -> float:
        """Time of a call, extrapolated from timing one denoiser forward on one batch."""
        m, cfg = self.model, self.model.config
        g = cfg.guidance_scale if guidance is None else guidance
        total = num_prompts * num_images * candidates
        b = min(batch_size, total) * (2 if g != 1 and cfg.conditioning != "none" else 1)
        x = torch.zeros(b, m.latent_chans, m.latent_size, m.latent_size, device=m.device)
        cond = {}
        if cfg.conditioning == "class":
            cond = m.encode_condition(unconditional=True, batch_size=b)
        elif cfg.conditioning == "text":
            cond = m.encode_condition(prompts=[""] * b)
        with torch.no_grad(), eval_mode(m):
            dt = timed(lambda: m.net(x, torch.full((b,), 500.0, device=m.device), **cond))
        return dt * (steps or cfg.sample_steps) * -(-total // min(batch_size, total))


@torch.no_grad()
def training_samples(model, n: int = 16, seed: int = 0) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] for fixed prompts / classes (the training loop's grid)."""
    cfg = model.config
    if cfg.conditioning == "class":
        prompts = [i % cfg.num_classes for i in range(n)]
    elif cfg.conditioning == "text":
        base = list(cfg.sample_prompts) or ["a red circle", "a blue square", "a green triangle"]
        prompts = [base[i % len(base)] for i in range(n)]
    else:
        prompts = None
    return DDPMPipeline(model, clip=None).sample(prompts, num_images=n, seed=seed)
