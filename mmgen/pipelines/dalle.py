"""DALL-E generation: prompt -> text tokens -> image tokens one at a time on the KV cache
(classifier-free guidance on the next-token logits) -> VQ decode -> CLIP rerank.

    pipe = DALLEPipeline.from_pretrained("checkpoints/dalle_shapes")  # finds ../vq_shapes, ../clip_shapes
    out = pipe(["a red circle above a blue square"], num_images=4, candidates=8, seed=0)
    out.images  # uint8 (1, 4, 3, 32, 32), best CLIP score first
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_companion
from ..models.base import eval_mode
from ..models.dalle import IMAGE_TOKENIZERS
from ..text.sampling import SamplingParams, make_generator, sample_next
from .base import Pipeline, ProgressReporter, timed
from .prompts import PromptReader, quiet

# the training loop's sample grids: a few fixed captions per data set
SAMPLE_PROMPTS = {
    "shapes": ("a red circle above a blue square", "a green triangle", "a yellow square left of a magenta circle",
               "a blue circle"),
    "emoji": ("red heart", "grinning face", "dog face", "green apple"),
}


def guided_logits(logits: torch.Tensor, batch: int, guidance: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(R, V) logits of row groups [cond_1; ..; cond_G; null] (each `batch` rows) -> (B, V)
    null + s * (cond - null), where cond = sum_g weights[g] * cond_g (weights (G, B); default one
    group of weight 1). Without the null group (R = G * B) it is cond."""
    V = logits.shape[-1]
    groups = logits.float().view(-1, batch, V)  # (G or G + 1, B, V)
    G = 1 if weights is None else weights.shape[0]
    cond = groups[0] if weights is None else (weights[..., None] * groups[:G]).sum(0)
    if groups.shape[0] == G:
        return cond
    null = groups[G]
    return null + guidance * (cond - null)


def composition_rows(model, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribute experts of text (B, L) for compositional sampling: rows (K + 1, B, L) =
    [every attribute word dropped (the base); only attribute word 1 kept; ..; only word K kept]
    (K the most attribute words of any row; a row with fewer repeats its base with weight 0) and
    weights (K + 1, B) with sum_k weights[k] * logits_k = base + sum_j (expert_j - base): the
    product of experts p(x | layout) * prod_j p(x | layout, word j) / p(x | layout), which draws
    "a red circle" from "a red <unk>" and "a <unk> circle" although red circles were never seen."""
    counts = [len(model.attribute_spans(ids)) for ids in text.tolist()]
    K = max(counts)
    rows = [model.drop_attributes(text, lambda n, k: [False] * k)]
    rows += [model.drop_attributes(text, lambda n, k, j=j: [i == j for i in range(k)]) for j in range(K)]
    weights = torch.zeros(K + 1, len(counts))
    for b, k in enumerate(counts):
        weights[0, b] = 1 - k
        weights[1:k + 1, b] = 1
    return torch.stack(rows), weights


def sampling_settings(config, guidance=None, temperature=None, top_k=None, top_p=None) -> tuple[float, SamplingParams]:
    """(guidance, SamplingParams) of a DALL-E config's sampling defaults, each overridden when
    given (top_k=0: no top-k)."""
    top_k = config.top_k if top_k is None else top_k
    params = SamplingParams(temperature=config.temperature if temperature is None else temperature,
                            top_k=top_k or None, top_p=config.top_p if top_p is None else top_p)
    return (config.guidance_scale if guidance is None else float(guidance)), params


@torch.no_grad()
def sample_image_tokens(model, text: torch.Tensor, *, guidance: float = 1.0, params: SamplingParams = SamplingParams(),
                        generator: torch.Generator | None = None, use_cache: bool = True,
                        force_null_rows: bool = False, compose: float = 0.0, on_token=None,
                        layout_text: torch.Tensor | None = None, first_codes: torch.Tensor | None = None,
                        layout_guidance: float | None = None, layout_params: SamplingParams | None = None
                        ) -> torch.Tensor:
    """Image tokens (B, h, w) for text ids (B, context_length): the whole DALL-E sampling loop.

    guidance s mixes the next-token logits null + s * (cond - null) (0 = unconditional,
    1 = conditional: the null rows are skipped unless force_null_rows). compose c > 0 (a model
    trained with attribute dropout) takes cond = (1 - c) * full prompt + c * the product of its
    attribute experts (`composition_rows`). use_cache=False recomputes the whole prefix at
    every step (the reference the KV cache must match).

    Two-stage sampling (a model with image_factors): first_codes (B, h, w) fixes the first code
    of every image token (the palette tokenizer's silhouette) and only the remaining codes are
    sampled; layout_text (B, L) ids from `model.layout.tokenize` draws first_codes with the
    layout model (config layout_path) with layout_guidance and layout_params (default: guidance
    and params) and the same generator. With config one_colour_per_object every object of the
    given first codes (the tokenizer's object_regions) is painted one colour: the rest codes of
    its first token in raster order fix those of its other tokens."""
    c = model.config
    regions = None  # one_colour_per_object: the object of each token, -1 for none
    if layout_text is not None:
        if model.layout is None:
            raise ValueError("layout_text needs a DALL-E with a layout model (config layout_path)")
        first_codes = sample_image_tokens(model.layout, layout_text, generator=generator, use_cache=use_cache,
                                          guidance=guidance if layout_guidance is None else layout_guidance,
                                          params=params if layout_params is None else layout_params,
                                          on_token=on_token)
    if first_codes is not None:
        if len(c.image_factors) < 2:
            raise ValueError("first_codes fix the first code of factorised image ids; this DALL-E has none "
                             "(image_factors)")
        if tuple(first_codes.shape) not in {(text.shape[0], *c.image_grid), (text.shape[0], c.image_tokens)}:
            raise ValueError(f"first_codes must be ({text.shape[0]}, {c.image_grid[0]}, {c.image_grid[1]}), got "
                             f"{tuple(first_codes.shape)}")
        rest = c.image_vocab // c.image_factors[0]  # ids per first code: id = first * rest + the others
        first_of_id = torch.arange(c.image_vocab, device=model.text_embed.weight.device) // rest  # (V,)
        first_codes = first_codes.reshape(text.shape[0], -1).to(first_of_id.device)  # (B, h*w)
        if c.one_colour_per_object:
            if not hasattr(model.vq, "object_regions"):
                raise ValueError("one_colour_per_object needs the DALL-E's tokenizer attached, one that finds objects "
                                 "(object_regions: the palette tokenizer)")
            regions = model.vq.object_regions(first_codes.view(-1, *c.image_grid)).flatten(1)  # (B, h*w), -1: none
            regions = regions.to(first_of_id.device)
            rest_of_id = torch.arange(c.image_vocab, device=first_of_id.device) % rest  # (V,)
            region_rest = torch.full((text.shape[0], int(regions.max()) + 2), -1, device=first_of_id.device)
    if text.ndim != 2 or text.shape[1] != c.context_length:
        raise ValueError(f"text must be (batch, {c.context_length}) ids from tokenize(), got {tuple(text.shape)}")
    if compose and not c.attr_words:
        raise ValueError(f"compose={compose} samples from attribute experts, and this DALL-E was trained without "
                         f"attribute dropout (config attr_words is empty): use compose=0")
    B, dev = text.shape[0], model.text_embed.weight.device
    text = text.to(dev)
    groups, weights = [text], None
    if compose:
        expert_rows, expert_weights = composition_rows(model, text)
        groups += list(expert_rows)
        weights = torch.cat([torch.full((1, B), 1.0 - compose), compose * expert_weights]).to(dev)  # (G, B)
    if guidance != 1.0 or force_null_rows:
        groups.append(model.null_text(B))
    rows = torch.cat(groups)  # (R, context_length), R = B * number of groups
    R = rows.shape[0]
    out = torch.empty(B, 0, dtype=torch.long, device=dev)  # (B, i) image tokens so far
    with eval_mode(model):
        cache = model.make_cache(R, c.seq_len) if use_cache else None
        _, logits = model(rows, cache=cache)  # prefill: the last text position predicts image token 0
        for i in range(c.image_tokens):
            step_logits = guided_logits(logits[:, -1], B, guidance, weights)  # (B, V)
            if first_codes is not None:  # only the ids whose first code is the given one
                step_logits = step_logits.masked_fill(first_of_id[None] != first_codes[:, i, None], float("-inf"))
            if regions is not None:  # a token of an object already painted: that object's colour
                slot = regions[:, i] + 1  # (B,) slot 0: no object, never painted
                want = region_rest.gather(1, slot[:, None])  # (B, 1), -1 = free
                step_logits = step_logits.masked_fill((want >= 0) & (rest_of_id[None] != want), float("-inf"))
            nxt = sample_next(step_logits, params, None, generator)  # (B,)
            if regions is not None:  # the first token of an object sets its colour
                new = (slot > 0) & (want[:, 0] < 0)
                region_rest[new, slot[new]] = nxt[new] % rest
            out = torch.cat([out, nxt[:, None]], 1)
            if on_token is not None:
                on_token()
            if i == c.image_tokens - 1:
                break
            if use_cache:  # one new position: the same token for every row group
                _, logits = model(nxt.repeat(R // B)[:, None], cache=cache, start=c.context_length + i)
            else:
                _, logits = model(torch.cat([rows, out.repeat(R // B, 1)], 1))
    return out.view(B, *c.image_grid)


class DALLEPipeline(Pipeline):
    """A DALL-E model + its VQ tokenizer (decodes image tokens) + an optional CLIP reranker (or
    several: the config's clip_path and extra_clip_paths, scoring together)."""

    kind = "dalle"
    model_type = "dalle"

    def __init__(self, model, vq=None, clip=None, *, name: str = ""):
        super().__init__(model, clip=clip, name=name)
        if vq is not None:
            model.attach(vq=vq)  # checks the codebook size and token grid

    @classmethod
    def _from_model(cls, model, ckpt_dir: Path, vq=None, clip=None):
        c = model.config
        if vq is None:
            if not c.vq_path:
                raise ValueError(f"{ckpt_dir} has no vq_path in its config: pass vq= (a VQ model)")
            vq = load_companion(c.vq_path, ckpt_dir, "vq", expect=IMAGE_TOKENIZERS, owner="DALL-E")
        if clip is None and c.clip_path:
            clip = [load_companion(p, ckpt_dir, "clip", expect="clip", owner="DALL-E")
                    for p in (c.clip_path, *c.extra_clip_paths)]
        return cls(model, vq=vq, clip=clip)

    @property
    def vq(self):
        return self.model.vq

    def parts(self) -> list:
        layout = self.model.layout
        return super().parts() + [self.vq] + ([layout] if layout is not None else [])

    def readers(self) -> list[PromptReader]:
        m = self.model
        data = m.config.train_data or m.config.tokenizer_captions
        out = [PromptReader("the DALL-E generator" + (f" (trained on {data} captions)" if data else ""), m.tokenizer,
                            seen=m.saw_word if m.has_caption_vocabulary() else None,
                            corpus=m.config.tokenizer_captions, max_tokens=m.config.context_length)]
        return out + ([self.clip_reader()] if self.clip is not None else [])

    def check_options(self, steps=None, compose=None, **kwargs) -> None:
        if compose is not None and not 0.0 <= compose <= 1.0:
            raise ValueError(f"compose must be in [0, 1] (0 = the prompt alone, 1 = its attribute experts alone), "
                             f"got {compose}")
        if kwargs:
            raise TypeError(f"DALLEPipeline takes no option {', '.join(sorted(kwargs))} (that is an option of "
                            f"diffusion pipelines)")

    def _generate(self, prompts, n, *, seed, guidance, steps, temperature, top_k, top_p, progress, truncate,
                  batch_size, compose=None) -> torch.Tensor:
        m, c = self.model, self.model.config
        compose = c.compose if compose is None else float(compose)
        # each stage samples with its own checkpoint's settings; what the caller passes sets both
        given = dict(guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p)
        guidance, params = sampling_settings(c, **given)
        layout_guidance, layout_params = (None, None) if m.layout is None else sampling_settings(m.layout.config,
                                                                                                 **given)
        reader = self.readers()[0]
        text = quiet(m.tokenize, [reader.clean(p) for p in prompts], truncate=truncate)  # (P, context_length)
        text = text.repeat_interleave(n, 0)  # (P * n, context_length), prompt-major
        layout_text = None if m.layout is None else \
            quiet(m.layout.tokenize, [reader.clean(p) for p in prompts], truncate=truncate).repeat_interleave(n, 0)
        gen = make_generator(seed, m.text_embed.weight.device)
        batches = range(0, len(text), batch_size)
        stages = 1 if layout_text is None else 2
        tick = ProgressReporter(progress, len(batches) * c.image_tokens * stages, f"DALL-E {len(text)} image(s)")
        try:
            images = []
            for i in batches:
                tokens = sample_image_tokens(m, text[i:i + batch_size], guidance=guidance, params=params,
                                             generator=gen, compose=compose, on_token=tick,
                                             layout_text=None if layout_text is None else layout_text[i:i + batch_size],
                                             layout_guidance=layout_guidance, layout_params=layout_params)
                images.append(self.vq.decode_tokens(tokens.to(self.vq.device)).float().cpu())  # (b, C, H, W)
        finally:
            tick.close()
        return torch.cat(images)

    def estimate_seconds(self, num_prompts: int, num_images: int = 4, candidates: int = 1, guidance=None,
                         batch_size: int = 64, compose=None, **kwargs) -> float:
        """Time of a call, extrapolated from timing 2 cached decode steps of one batch (with
        compose, as if every prompt named two objects: 5 expert rows per image)."""
        m, c = self.model, self.model.config
        g = c.guidance_scale if guidance is None else guidance
        compose = c.compose if compose is None else compose
        total = num_prompts * num_images * candidates
        b = min(batch_size, total)
        rows = m.null_text(b * ((2 if g != 1 else 1) + (5 if compose else 0)))
        with torch.no_grad(), eval_mode(m):
            cache = m.make_cache(rows.shape[0], c.seq_len)
            m(rows, cache=cache)
            tok = torch.zeros(rows.shape[0], 1, dtype=torch.long, device=rows.device)
            dt = timed(lambda: [m(tok, cache=cache, start=c.context_length + j) for j in range(2)]) / 2
        own = dt * c.image_tokens * -(-total // b)
        if m.layout is not None:  # the layout model draws first, at its own speed
            own += DALLEPipeline(m.layout).estimate_seconds(num_prompts, num_images, candidates, guidance, batch_size)
        return own


@torch.no_grad()
def training_samples(model, n: int = 16, seed: int = 0) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] for a few fixed captions of the training data set, no
    reranking (the training loop's sample grid)."""
    prompts = SAMPLE_PROMPTS.get(model.config.train_data, SAMPLE_PROMPTS["shapes"])
    per = max(1, -(-n // len(prompts)))
    c = model.config
    text = quiet(model.tokenize, list(prompts), truncate=True).repeat_interleave(per, 0)[:n]
    layout_text = None if model.layout is None else \
        quiet(model.layout.tokenize, list(prompts), truncate=True).repeat_interleave(per, 0)[:n]
    guidance, params = sampling_settings(c)
    layout_guidance, layout_params = (None, None) if model.layout is None else sampling_settings(model.layout.config)
    tokens = sample_image_tokens(model, text, guidance=guidance, params=params, layout_text=layout_text,
                                 layout_guidance=layout_guidance, layout_params=layout_params,
                                 generator=make_generator(seed, model.text_embed.weight.device))
    return model.vq.decode_tokens(tokens.to(model.vq.device)).cpu()
