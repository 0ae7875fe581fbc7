"""DALL-E speed, in one run:

1. Training tokens/s of DALL-E (the shipped dalle_shapes: text + image embeddings, row/column
   positions, two output heads, caption bookkeeping and condition dropout, the 1:7 loss)
   against a plain mmgen GPT of the same shape on the same shared blocks (width, depth, heads,
   MLP, sequence length, vocabulary = text + image codes, untied head as DALL-E's), one AdamW
   step each on a batch of the recipe's size, fp32 and (where the hardware runs it natively, or
   with --bf16) bf16 autocast.
2. Sampling images/s through DALLEPipeline (KV cache, classifier-free guidance, VQ decoding):
   one sample per image without a reranker, and best of 8 by CLIP (8 samples drawn, scored by
   the CLIP reranker, the best kept).

Ratios are measured round-robin in one process so that load from other jobs hits both sides
alike; DALL-E / GPT >= 1 means DALL-E trains as fast as the plain decoder.

    python -m bench dalle
    python -m bench.bench_dalle --only train --batch 64 --repeats 20
    python -m bench.bench_dalle --tiny        # dalle_tiny with random weights, one repeat: checks that it runs
"""
from __future__ import annotations

import argparse
import warnings

import torch

from bench.timing import amp_dtypes, compare, print_table, train_step

CAPTIONS = ("a red circle above a blue square", "a green triangle", "a yellow square left of a magenta circle",
            "a blue circle", "a cyan cross below a red diamond", "a magenta triangle")


def gpt_twin(dalle):
    """A plain GPT with DALL-E's block stack, sequence length and total vocabulary."""
    from mmgen.models.gpt import GPT, GPTConfig
    c, b = dalle.config, dalle.config.block
    cfg = GPTConfig(vocab_size=c.text_vocab + c.image_vocab, context_length=c.seq_len, embed_dim=b.embed_dim,
                    depth=b.depth, num_heads=b.num_heads, num_kv_heads=b.num_kv_heads, head_dim=b.head_dim,
                    mlp=b.mlp, mlp_ratio=b.mlp_ratio, mlp_hidden=b.mlp_hidden, norm=b.norm, norm_eps=b.norm_eps,
                    norm_place=b.norm_place, bias=b.qkv_bias, qk_norm=b.qk_norm, tie_weights=False,
                    dropout=b.dropout, attn_impl=b.attn_impl)
    return GPT(cfg)


def _load(checkpoint: str | None, preset: str):
    """(model, its pipeline or None, name): a shipped checkpoint, or the preset with random weights."""
    import mmgen
    if checkpoint:
        from mmgen.pipelines import load_pipeline
        pipe = load_pipeline(checkpoint)
        return pipe.model, pipe, checkpoint
    torch.manual_seed(0)
    return mmgen.create_model(preset), None, f"{preset} (random weights)"


def train_table(model, name: str, batch: int, repeats: int, device: str, bf16: bool | None = None) -> None:
    torch.manual_seed(0)
    c = model.config
    ours = model.to(device).train()
    gpt = gpt_twin(ours).to(device).train()
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny contexts cut the captions
        text = ours.tokenize(caps, truncate=True)
    b_dalle = {"text": text,
               "image_tokens": torch.randint(0, c.image_vocab, (batch, *c.image_grid), device=device), "caption": caps}
    ids = torch.randint(0, gpt.config.vocab_size, (batch, c.seq_len), device=device)
    b_gpt = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    tokens = batch * (c.seq_len - 1)  # positions predicted per step, both sides
    rows = []
    for dtype in amp_dtypes(device, bf16):
        res = compare({"dalle": train_step(ours, b_dalle, torch.optim.AdamW(ours.parameters(), 1e-4), dtype, device),
                       "gpt": train_step(gpt, b_gpt, torch.optim.AdamW(gpt.parameters(), 1e-4), dtype, device)},
                      warmup=2, repeats=repeats)
        d, g = res["dalle"].median_s, res["gpt"].median_s
        rows.append([dtype, tokens / d, tokens / g, g / d])
    n_d = sum(p.numel() for p in ours.parameters())
    n_g = sum(p.numel() for p in gpt.parameters())
    b = c.block
    print_table(f"DALL-E training step ({name}: {n_d / 1e6:.3f}M params) vs a plain GPT of the same shape "
                f"({n_g / 1e6:.3f}M: width {b.embed_dim}, depth {b.depth}, {b.num_heads} heads, {c.seq_len - 1} "
                f"positions, vocab {c.text_vocab} + {c.image_vocab}), batch {batch}, {device}",
                ["dtype", "DALL-E tok/s", "GPT tok/s", "DALL-E/GPT (>=1: as fast)"], rows)


def sampling_table(pipe, name: str, prompts: int, images: int, candidates: int, repeats: int) -> None:
    from mmgen.pipelines.dalle import DALLEPipeline
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(prompts)]
    plain = DALLEPipeline(pipe.model, vq=pipe.vq, clip=None)  # the same model and VQ, no reranker
    runs = {"one sample, no reranker": lambda: plain(caps, num_images=images, seed=0),
            f"best of {candidates} by CLIP": lambda: pipe(caps, num_images=images, candidates=candidates, seed=0)}
    res = compare(runs, warmup=1, repeats=repeats)
    kept = prompts * images
    drawn = {k: kept * (candidates if "best" in k else 1) for k in runs}
    rows = [[k, 1e3 * t.median_s, kept / t.median_s, drawn[k] / t.median_s] for k, t in res.items()]
    print_table(f"DALL-E sampling ({name}): {prompts} prompts x {images} images, guidance "
                f"{pipe.model.config.guidance_scale}, KV cache, {pipe.device}",
                ["", "ms per call", "images/s (kept)", "samples/s (drawn)"], rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="train,sampling", help="comma-separated: train, sampling")
    p.add_argument("--checkpoint", default="dalle_shapes", help="a shipped name or a directory")
    p.add_argument("--batch", type=int, default=32, help="training batch (the recipe's 32)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--images", type=int, default=2, help="images kept per prompt")
    p.add_argument("--candidates", type=int, default=8, help="samples drawn per kept image when reranking")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", default=None,
                   help="also time bf16 autocast where it is emulated (CPUs without AVX-512 BF16 or AMX: ~15x slower)")
    p.add_argument("--tiny", action="store_true",
                   help="training: dalle_tiny (random weights), batch 4; sampling: 1 prompt, 2 candidates; one repeat")
    args = p.parse_args(argv or [])
    only = set(args.only.split(","))
    if args.tiny:
        args.batch, args.prompts, args.images, args.candidates, args.repeats = 4, 1, 1, 2, 1
    if "train" in only:
        model, _, name = _load(None if args.tiny else args.checkpoint, "dalle_tiny")
        train_table(model, name, args.batch, args.repeats, args.device, args.bf16)
    if "sampling" in only:  # a fresh copy: the training table has moved the weights
        _, pipe, name = _load(args.checkpoint, "")
        pipe.to(args.device)
        sampling_table(pipe, name, args.prompts, args.images, args.candidates, max(2, args.repeats // 3))


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
