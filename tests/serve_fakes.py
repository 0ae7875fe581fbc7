"""A stand-in for mmgen.pipelines in the `mmgen serve` tests: the same public surface
(load_pipeline's pipeline: kind, vocabulary, check_prompts, __call__ -> output; make_grid),
random images in milliseconds, and hooks to hold a generation or make it fail."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from PIL import Image

VOCAB = ["a", "above", "below", "blue", "circle", "cross", "green", "left", "of", "red", "right", "square",
         "the", "triangle", "yellow"]
MAX_WORDS = 12
UNSET = "unset"  # a steps value nobody passes: tells whether the server passed one


@dataclass
class FakeOutput:
    images: torch.Tensor          # (P, N, 3, H, W) uint8
    scores: torch.Tensor | None   # (P, N)
    seed: int
    warnings: list[str]
    prompts: list[str]


@dataclass
class FakePipeline:
    kind: str = "dalle"
    size: int = 32
    steps_total: int = 5
    gate: threading.Event | None = None    # when set, each call waits for it (to hold a generation)
    fail: Exception | None = None           # when set, each call raises it
    calls: list = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def vocabulary(self) -> list[str]:
        return sorted(VOCAB)

    def check_prompts(self, prompts, truncate=False) -> list[str]:
        warnings = []
        for p in prompts:
            words = p.lower().split()
            if not words:
                raise ValueError("empty prompt: give some text, e.g. 'a red circle'")
            if len(words) > MAX_WORDS and not truncate:
                raise ValueError(f"prompt too long: {len(words)} words, the model reads at most {MAX_WORDS}")
            unknown = [w for w in words if w not in VOCAB]
            if len(unknown) == len(words):
                raise ValueError(f"the model knows no word of {p!r}; it knows e.g. 'red', 'circle', 'above'")
            if unknown:
                warnings.append(f"unknown words in {p!r}: {', '.join(unknown)} (the model ignores them)")
        return warnings

    def __call__(self, prompts, num_images=4, seed=None, guidance=3.0, candidates=1, rerank=True, steps=UNSET,
                 temperature=1.0, top_k=None, top_p=None, progress=None):
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(dict(prompts=list(prompts), num_images=num_images, seed=seed, guidance=guidance,
                                   candidates=candidates, rerank=rerank, steps=steps))
        try:
            warnings = self.check_prompts(prompts)
            if self.gate is not None:
                assert self.gate.wait(30), "test gate never opened"
            if self.fail is not None:
                raise self.fail
            seed = 1234 if seed is None else seed
            g = torch.Generator().manual_seed(seed)
            for i in range(self.steps_total):
                if progress is not None:
                    progress(i + 1, self.steps_total)
            images = torch.randint(0, 256, (len(prompts), num_images, 3, self.size, self.size),
                                   dtype=torch.uint8, generator=g)
            scores = torch.rand(len(prompts), num_images, generator=g) if rerank else None
            return FakeOutput(images, scores, seed, warnings, list(prompts))
        finally:
            with self._lock:
                self.running -= 1


def fake_make_grid(out, scale=8, captions=True) -> Image.Image:
    P, N, _, H, W = out.images.shape
    grid = out.images.permute(0, 3, 1, 4, 2).reshape(P * H, N * W, 3)  # (P*H, N*W, 3)
    return Image.fromarray(grid.numpy()).resize((N * W * scale, P * H * scale), Image.NEAREST)
