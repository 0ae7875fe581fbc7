"""Generation pipelines (diffusers-style): a generator model with its companions -- the VQ
tokenizer or the noise scheduler, and an optional CLIP reranker -- behind one call.

    from mmgen.pipelines import load_pipeline, make_grid
    pipe = load_pipeline("dalle_shapes")          # a shipped name or a checkpoint directory
    out = pipe(["a red circle above a blue square"], num_images=4, candidates=4)
    print(out.seed, out.scores)                   # the seed used (seed=None draws one)
    make_grid(out).save("grid.png")               # upscaled, prompts as row captions

Prompt checks (`check_prompts`, `vocabulary`), candidates and CLIP reranking, decoding and
progress live here; `mmgen generate`, the demo and the evaluation scripts call pipelines.
The whole sampling loop is one short function: `dalle.sample_image_tokens` (token by token on
the KV cache) and `DDPMPipeline.denoise` (a model + scheduler loop)."""
from __future__ import annotations

from .base import Pipeline, PipelineOutput
from .dalle import DALLEPipeline
from .ddpm import DDPMPipeline
from .grid import make_grid, raw_grid
from .paths import find_checkpoint

PIPELINES = {"dalle": DALLEPipeline, "ddpm": DDPMPipeline}


def pipeline_class(model_type: str) -> type[Pipeline]:
    if model_type not in PIPELINES:
        raise TypeError(f"a {model_type!r} checkpoint is not an image generator; pipelines exist for "
                        f"{sorted(PIPELINES)} checkpoints")
    return PIPELINES[model_type]


def load_pipeline(name_or_path, *, device=None, **kwargs) -> Pipeline:
    """The pipeline of a shipped checkpoint ("dalle_shapes", "dalle_emoji", "ddpm_shapes") or of
    any DALL-E / DDPM checkpoint directory."""
    from ..checkpoint import read_config
    ckpt = find_checkpoint(name_or_path)
    cls = pipeline_class(read_config(ckpt)["model_type"])
    return cls.from_pretrained(name_or_path, device=device, **kwargs)


def from_model(model, **kwargs) -> Pipeline:
    """The pipeline around a model already in memory (e.g. one being trained)."""
    return pipeline_class(getattr(model, "model_type", type(model).__name__))(model, **kwargs)


__all__ = ["DALLEPipeline", "DDPMPipeline", "Pipeline", "PipelineOutput", "find_checkpoint", "from_model",
           "load_pipeline", "make_grid", "raw_grid"]
