"""What every generation pipeline shares: loading and saving, argument checks, seeds,
progress, CLIP reranking and the output record."""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..metrics.clip_score import clip_scores
from .prompts import PromptReader, check_prompts

Progress = bool | Callable[[int, int], None]
MAX_IMAGES_PER_CALL = 100_000  # prompts x num_images x candidates beyond this is refused


@dataclass
class PipelineOutput:
    """images: uint8 (P, N, 3, H, W) at the model's resolution, one row of N per prompt, best
    first when reranked; scores: float (P, N) CLIP scores 100 * cos(image, prompt) of those
    images, or None without a CLIP; seed: the seed actually used (pass it again to get the
    same images); warnings: what the prompt checks said."""
    images: torch.Tensor
    scores: torch.Tensor | None
    prompts: list[str]
    seed: int
    warnings: list[str] = field(default_factory=list)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> uint8 (B, 3, H, W) in [0, 255] (grey repeated to RGB)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] (any leading dims) -> float32 in [-1, 1] (what metrics take)."""
    return images.float() / 127.5 - 1.0


def draw_seed() -> int:
    """A fresh random seed (not from torch's global RNG, so a seeded program still varies it)."""
    return random.SystemRandom().randrange(2**31)


def _finite(name: str, value, *, low: float | None = None, high: float | None = None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def _count(name: str, value, low: int = 1, high: int | None = None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


class ProgressReporter:
    """progress=True: a bar with the time left on stderr; a callable: called (done, total)."""

    def __init__(self, progress: Progress, total: int, desc: str):
        self.total, self.done = total, 0
        self.fn = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.fn is not None:
            self.fn(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Pipeline:
    """A generator model with its companions. Subclasses set `kind`, build `readers()` and
    implement `_generate(prompts, n, ...)` -> images (P * n, C, H, W) in [-1, 1]."""

    kind = ""
    model_type = ""

    def __init__(self, model, *, clip=None, name: str = ""):
        if getattr(model, "model_type", None) != self.model_type:
            raise TypeError(f"{type(self).__name__} needs a {self.model_type!r} model, got "
                            f"{getattr(model, 'model_type', type(model).__name__)!r}")
        self.model = model.eval()
        self.clip = None if clip is None else self._check_clip(clip)
        self.name = name  # how the user named it (for messages: `mmgen vocab NAME`)

    @staticmethod
    def _check_clip(clip):
        """A CLIP model, or a list of them (scoring together: CLIPEnsemble; one is itself)."""
        if isinstance(clip, (list, tuple)):
            from ..models.clip import CLIPEnsemble
            clip = clip[0] if len(clip) == 1 else CLIPEnsemble(clip)
        if not (hasattr(clip, "encode_image") and hasattr(clip, "encode_text")):
            raise TypeError(f"reranking needs a CLIP model (encode_image / encode_text), got {type(clip).__name__}")
        return clip.eval().requires_grad_(False)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path, *, device: str | torch.device | None = None, **kwargs) -> "Pipeline":
        """A pipeline from a checkpoint directory (or a shipped name); its companions are found
        relative to that directory."""
        from ..checkpoint import load_pretrained
        from .paths import find_checkpoint
        ckpt = find_checkpoint(path)
        model = load_pretrained(ckpt)
        pipe = cls._from_model(model, ckpt, **kwargs)
        pipe.name = str(path)
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def _from_model(cls, model, ckpt_dir: Path, **kwargs) -> "Pipeline":
        return cls(model, **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the generator's checkpoint; companion paths are stored relative to `path`."""
        return self.model.save_pretrained(path)

    def to(self, device) -> "Pipeline":
        for m in self.parts():
            m.to(device)
        return self

    def parts(self) -> list:
        return [self.model] + ([self.clip] if self.clip is not None else [])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- prompts
    def readers(self) -> list[PromptReader]:
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """The words every prompt-reading part of this pipeline can read, sorted (an empty list
        when no part limits the words: byte-level tokenizers read any text)."""
        if getattr(self, "_vocabulary", None) is None:
            sets = [v for v in (r.vocabulary() for r in self.readers()) if v is not None]
            self._vocabulary = sorted(set.intersection(*sets)) if sets else []
        return list(self._vocabulary)

    def check_prompts(self, prompts: Sequence[str], truncate: bool = False) -> list[str]:
        """Warnings (one line each) about words a part cannot read; ValueError for an empty
        prompt, an over-long one (unless truncate) or one with no word the generator reads."""
        return check_prompts(self.readers(), prompts, truncate, self.name)

    # ---------------------------------------------------------------- generation
    def check_args(self, prompts, num_images, candidates, guidance, steps, temperature, top_k, top_p,
                   progress) -> list[str]:
        """Refuse bad arguments before any work; the prompts as a list."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        _count("num_images", num_images)
        _count("candidates", candidates)
        _finite("guidance", guidance, low=0.0, allow_none=True)
        _count("steps", steps, allow_none=True)
        _finite("temperature", temperature, low=0.0, allow_none=True)
        _count("top_k", top_k, low=0, allow_none=True)  # 0: no top-k filter
        _finite("top_p", top_p, allow_none=True)
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        if not (isinstance(progress, bool) or callable(progress)):
            raise TypeError(f"progress must be True, False or a callable(done, total), got {progress!r}")
        total = len(prompts) * num_images * candidates
        if total > MAX_IMAGES_PER_CALL:
            raise ValueError(f"{len(prompts)} prompt(s) x {num_images} image(s) x {candidates} candidate(s) = "
                             f"{total:,} samples in one call; at most {MAX_IMAGES_PER_CALL:,}: split the work")
        return list(prompts)

    def __call__(self, prompts: Sequence[str], num_images: int = 4, seed: int | None = None,
                 guidance: float | None = None, candidates: int = 1, rerank: bool = True, steps: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 progress: Progress = False, *, truncate: bool = False, batch_size: int = 64,
                 **kwargs) -> PipelineOutput:
        """Images for prompts: num_images per prompt. With candidates > 1, num_images *
        candidates are drawn per prompt and the num_images with the best CLIP score are kept
        (rerank=False keeps the first ones). With a CLIP and rerank=True the kept images are
        sorted best first. seed=None draws a seed (out.seed holds it). guidance, steps,
        temperature, top_k and top_p None take the checkpoint's defaults (top_k=0: no top-k)."""
        prompts = self.check_args(prompts, num_images, candidates, guidance, steps, temperature, top_k, top_p,
                                  progress)
        _count("batch_size", batch_size)
        self.check_options(steps=steps, **kwargs)
        if candidates > 1 and rerank and self.clip is None:
            raise ValueError(f"candidates={candidates} keeps the best images by CLIP score, and this {self.kind} "
                             f"pipeline has no CLIP reranker: pass candidates=1 (or rerank=False)")
        if seed is None:
            seed = draw_seed()
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        notes = self.check_prompts(prompts, truncate)
        n = num_images * candidates  # samples per prompt
        images = self._generate(prompts, n, seed=seed, guidance=guidance, steps=steps, temperature=temperature,
                                top_k=top_k, top_p=top_p, progress=progress, truncate=truncate,
                                batch_size=batch_size, **kwargs)  # (P * n, C, H, W) in [-1, 1], prompt-major
        P = len(prompts)
        scores = None
        if self.clip is not None:
            clip_prompts = [self.clip_reader().clean(p) for p in prompts for _ in range(n)]
            scores = clip_scores(self.clip, images, clip_prompts, batch_size).view(P, n)
        images = images.view(P, n, *images.shape[1:])
        if scores is not None and rerank:
            order = scores.argsort(dim=1, descending=True, stable=True)  # (P, n) best first
            images = torch.stack([images[p, order[p]] for p in range(P)])
            scores = torch.gather(scores, 1, order)
        images = images[:, :num_images]
        out = to_uint8(images.flatten(0, 1)).view(P, num_images, 3, *images.shape[-2:])
        return PipelineOutput(out, None if scores is None else scores[:, :num_images].contiguous(),
                              list(prompts), int(seed), notes)

    def check_options(self, **kwargs) -> None:
        """Refuse options this kind of pipeline does not take (and bad values of its own)."""
        bad = sorted(k for k in kwargs if k != "steps")
        if bad:
            raise TypeError(f"{type(self).__name__} takes no option {', '.join(bad)}")

    def clip_reader(self) -> PromptReader:
        """The CLIP reranker as a prompt reader (its pruned vocabulary; it cuts long prompts)."""
        tok = getattr(getattr(self.clip, "tokenizer", None), "tokenizer", None)
        ctx = getattr(getattr(self.clip, "tokenizer", None), "context_length", None)
        corpus = getattr(getattr(self.clip, "config", None), "tokenizer_captions", "") or ""
        return PromptReader("the CLIP reranker", tok if tok is not None else _AnyText(), corpus=corpus.split(":")[0],
                            required=False, max_tokens=ctx, truncates=True)

    def estimate_seconds(self, num_prompts: int, num_images: int = 4, candidates: int = 1, **kwargs) -> float:
        """A rough time for a call, from timing one small piece of the work here."""
        raise NotImplementedError

    def _generate(self, prompts, n, **kw) -> torch.Tensor:
        raise NotImplementedError


class _AnyText:
    """A stand-in tokenizer for a CLIP without one: reads everything."""
    unk_id = None

    def encode(self, text, add_bos=False, add_eos=False):
        return list(text.encode())


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
