"""CLIP training-step throughput: our clip_tiny beside an open_clip CLIP built from a custom
model config with the same tower sizes (ViT 32 px / patch 4, text transformer of the same
width, depth, heads, context and vocabulary), one AdamW step each on the same batch,
interleaved in one process. Prints images/s, the ratio, and the MFU of ours.

    python -m bench clip            (or: python bench/bench_clip.py [--batch 128 --device cuda])
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import autocast, compare, matmul_peak_flops, print_table, train_step  # noqa: E402


def open_clip_config(model) -> dict:
    """An open_clip model config (the JSON of open_clip/model_configs/*.json) with our
    model's tower sizes."""
    v, t = model.visual.config, model.config.text
    return {"embed_dim": model.config.embed_dim,
            "vision_cfg": {"image_size": v.img_size, "patch_size": v.patch_size, "layers": v.depth, "width": v.embed_dim,
                           "head_width": v.embed_dim // v.num_heads, "mlp_ratio": v.mlp_ratio},
            "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.embed_dim,
                         "heads": t.num_heads, "layers": t.depth, "mlp_ratio": t.mlp_ratio}}


def open_clip_twin(model, name: str = "mmgen-clip-twin"):
    """open_clip.create_model on a custom model config registered with add_model_config
    (random weights, nothing downloaded)."""
    import json
    import tempfile
    from pathlib import Path

    import open_clip
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{name}.json").write_text(json.dumps(open_clip_config(model)))
        open_clip.add_model_config(tmp)
        return open_clip.create_model(name, pretrained=None)


def train_flops_per_image(model, batch) -> float:
    """~6 x params-in-matmuls x tokens for both towers (forward 2, backward 4), plus attention."""
    v, t = model.visual.config, model.config.text
    n_img = (v.img_size // v.patch_size) ** 2 + 1
    vis = 12 * v.depth * v.embed_dim ** 2 * n_img + 2 * v.depth * 2 * n_img ** 2 * v.embed_dim
    txt = 12 * t.depth * t.embed_dim ** 2 * t.context_length + 2 * t.depth * 2 * t.context_length ** 2 * t.embed_dim
    return 3 * (vis + txt)  # fwd (2 FLOPs/MAC already in the 12) + bwd (2x fwd)


def main(argv: list[str] | None = None) -> None:
    import mmgen
    from open_clip.loss import ClipLoss as OCClipLoss
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="clip_tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv or [])
    dev = args.device
    torch.manual_seed(0)
    ours = mmgen.create_model(args.preset).to(dev).train()
    theirs = open_clip_twin(ours).to(dev).train()
    batch = ours.example_batch(args.batch, dev)
    oc_loss = OCClipLoss()
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    rows = []
    for dtype in ("fp32", "bf16"):
        step_ours = train_step(ours, batch, opt_o, dtype, dev, after=ours.post_step)

        def step_theirs():
            with autocast(dtype, dev.split(":")[0]):
                img, txt, scale = theirs(batch["image"], batch["input_ids"])
                loss = oc_loss(img, txt, scale)
            opt_t.zero_grad(set_to_none=True)
            loss.backward()
            opt_t.step()
            with torch.no_grad():
                theirs.logit_scale.clamp_(0, 4.6052)

        t = compare({"ours": step_ours, "open_clip": step_theirs}, warmup=2, repeats=args.repeats)
        peak = matmul_peak_flops(dtype, device=dev)
        flops = train_flops_per_image(ours, batch) * args.batch
        r_o, r_t = t["ours"].rate(args.batch), t["open_clip"].rate(args.batch)
        rows.append([dtype, f"{ours.num_params() / 1e6:.2f}M", f"{sum(p.numel() for p in theirs.parameters()) / 1e6:.2f}M",
                     r_o, r_t, r_o / r_t, flops / t["ours"].median_s / peak])
    print_table(f"CLIP train step ({args.preset} vs open_clip custom config), batch {args.batch}, {dev}",
                ["dtype", "ours params", "open_clip params", "ours img/s", "open_clip img/s", "ours/open_clip",
                 "ours MFU"], rows)


if __name__ == "__main__":
    main(sys.argv[1:])
