"""Diffusion speed, in one run:

1. UNet training step (forward + backward + AdamW on an MSE loss, text-conditional: timestep
   + pooled-text vector, cross-attention to the per-token text states) of our UNet against
   diffusers' `UNet2DConditionModel` built to the same size: the same channels per level,
   res blocks, attention resolutions, heads, GroupNorm groups, FiLM (scale-shift) timestep
   input, cross-attention width and GEGLU width; both take the same inputs (the text states
   of our text encoder on shapes captions). fp32 and bf16 autocast, each in the library's
   default memory layout and with channels_last (weights and input) on both sides.
2. DiT training step: ours against diffusers' `DiTTransformer2DModel` (patch size, width,
   depth, heads, MLP). diffusers' DiT is class-conditional only (adaLN-Zero from timestep +
   class label, no cross-attention), so both run class-conditional here; our text-
   conditional DiT (cross-attention, as shipped) is timed beside them with no peer.
3. Sampling overhead: `DDPMPipeline.sample` (DPM-Solver++, 25 steps, guidance 3) against the
   25 guided denoiser forwards alone on the same batch; what the pipeline adds (text
   encoding, scheduler steps, guidance mixing, decoding) as a percentage of the forwards.

Ratios are peer time / our time (>= 1: ours at least as fast), measured round-robin in one
process so that load from other jobs hits both sides alike.

    python -m bench ddpm
    python -m bench.bench_ddpm --only unet --batch 64 --repeats 20
    python -m bench.bench_ddpm --tiny        # tiny presets, one repeat: checks that it runs
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
import torch
import torch.nn.functional as F

from bench.timing import autocast, compare, print_table

CAPTIONS = ("a red circle above a blue square", "a green triangle", "a cyan cross left of a magenta triangle",
            "a yellow diamond", "a blue square below a red circle", "a magenta circle")
MODES = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (autocast dtype, channels_last)


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def diffusers_unet(model):
    """diffusers' UNet2DConditionModel shaped like our DDPM's text-conditional UNet: a
    CrossAttn block at each level our UNet attends at, the same channels, res blocks
    (decoder: one more), heads, groups, scale-shift timestep FiLM, cross-attention width,
    the pooled text as a projected class embedding, and each transformer's GEGLU given our
    hidden width (diffusers' default is 4x, ours 8/3x)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import FeedForward
    net, cfg = model.net, model.config
    u = net.cfg
    if net.context_dim is None:
        raise ValueError(f"the UNet benchmark needs a text-conditional preset (cross-attention), got "
                         f"conditioning={cfg.conditioning!r}")
    attn = [net._has_attn(level) for level in range(net.levels)]
    twin = UNet2DConditionModel(
        sample_size=net.img_size, in_channels=net.in_chans, out_channels=net.in_chans,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(u.base_ch * m for m in u.ch_mult), layers_per_block=u.num_res_blocks,
        norm_num_groups=u.groups, norm_eps=1e-6, cross_attention_dim=net.context_dim,
        attention_head_dim=u.num_heads,  # diffusers' historical name: this is the head count
        resnet_time_scale_shift="scale_shift" if u.emb_mode == "scale_shift" else "default",
        class_embed_type="projection", projection_class_embeddings_input_dim=cfg.cond_dim)
    hidden = {blk.cfg.embed_dim: blk.cfg.hidden_dim for blk in _blocks(net)}
    for mod in twin.modules():
        if type(mod).__name__ == "BasicTransformerBlock":
            dim = mod.ff.net[0].proj.in_features
            mod.ff = FeedForward(dim, inner_dim=hidden[dim], activation_fn="geglu")
    return twin


def _blocks(net):
    from mmgen.layers import TransformerBlock
    return [m for m in net.modules() if isinstance(m, TransformerBlock)]


def _train_step(net, forward, opt, x, noise, dtype):
    def step():
        with autocast(dtype, x.device.type):
            out = forward(net, x)
        loss = F.mse_loss(out.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def unet_table(preset: str, batch: int, repeats: int, device: str, modes=MODES) -> None:
    import mmgen
    torch.manual_seed(0)
    model = mmgen.create_model(preset).to(device)
    ours, theirs = model.net.train(), diffusers_unet(model).to(device).train()
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    with torch.no_grad():
        cond = model.encode_condition(caps)  # cond (B, cond_dim), context (B, S, width), context_mask (B, S)
    size, chans = ours.img_size, ours.in_chans
    x = torch.randn(batch, chans, size, size, device=device)
    noise = torch.randn_like(x)
    t = torch.randint(0, model.config.num_train_timesteps, (batch,), device=device)

    def fwd_ours(net, xi):
        return net(xi, t.float(), **cond)

    def fwd_theirs(net, xi):
        return net(xi, t, encoder_hidden_states=cond["context"], class_labels=cond["cond"],
                   encoder_attention_mask=cond["context_mask"]).sample

    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    rows = []
    for dtype, channels_last in modes:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        ours.to(memory_format=fmt)
        theirs.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        res = compare({"ours": _train_step(ours, fwd_ours, opt_o, xi, noise, dtype),
                       "diffusers": _train_step(theirs, fwd_theirs, opt_t, xi, noise, dtype)},
                      warmup=2, repeats=repeats)
        o, d = res["ours"].median_s, res["diffusers"].median_s
        rows.append([dtype, "channels_last" if channels_last else "default", 1e3 * o, 1e3 * d, batch / o, batch / d,
                     d / o, res["diffusers"].min_s / res["ours"].min_s])
    ours.to(memory_format=torch.contiguous_format)
    print_table(f"UNet training step, {preset} ({num_params(ours) / 1e6:.3f}M params) vs diffusers "
                f"UNet2DConditionModel ({num_params(theirs) / 1e6:.3f}M), batch {batch} x {chans}x{size}x{size}, "
                f"{cond['context'].shape[1]} text tokens of width {cond['context'].shape[2]}, {device}",
                ["dtype", "layout", "ours ms", "diffusers ms", "ours img/s", "diffusers img/s",
                 "diffusers/ours (>=1: ours as fast)", "same, best times"], rows)


def diffusers_dit(model, num_classes: int):
    """diffusers' DiTTransformer2DModel with our DiT's patch size, width, depth, heads and
    MLP (tanh GELU, 4x), class-conditional (the only conditioning it has)."""
    from diffusers import DiTTransformer2DModel
    c, net = model.config.dit, model.net
    if c.mlp != "gelu_tanh" or c.mlp_ratio != 4.0:
        raise ValueError(f"diffusers' DiT has a 4x tanh-GELU MLP; this preset has mlp={c.mlp!r} x{c.mlp_ratio}")
    return DiTTransformer2DModel(num_attention_heads=c.num_heads, attention_head_dim=c.embed_dim // c.num_heads,
                                 in_channels=net.in_chans, out_channels=net.in_chans, num_layers=c.depth,
                                 sample_size=net.img_size, patch_size=c.patch_size, num_embeds_ada_norm=num_classes)


def dit_table(preset: str, batch: int, repeats: int, device: str, num_classes: int = 10) -> None:
    import mmgen
    torch.manual_seed(0)
    text = mmgen.create_model(preset).to(device).train()  # as shipped: text-conditional, cross-attention
    d = text.config.dit.embed_dim
    klass = mmgen.create_model(preset, conditioning="class", num_classes=num_classes, cond_dim=d).to(device).train()
    theirs = diffusers_dit(klass, num_classes).to(device).train()
    size, chans = klass.net.img_size, klass.net.in_chans
    x = torch.randn(batch, chans, size, size, device=device)
    noise = torch.randn_like(x)
    t = torch.randint(0, klass.config.num_train_timesteps, (batch,), device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    with torch.no_grad():
        tcond = text.encode_condition([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])

    def fwd_class(model):
        return lambda net, xi: model.net(xi, t.float(), cond=model.class_embed(labels))

    def fwd_text(net, xi):
        return net(xi, t.float(), **tcond)

    def fwd_theirs(net, xi):
        return net(xi, timestep=t, class_labels=labels).sample

    rows = []
    for dtype in ("fp32", "bf16"):
        steps = {"ours": _train_step(klass, fwd_class(klass), torch.optim.AdamW(klass.parameters(), 1e-4), x, noise,
                                     dtype),
                 "diffusers": _train_step(theirs, fwd_theirs, torch.optim.AdamW(theirs.parameters(), 1e-4), x, noise,
                                          dtype),
                 "ours_text": _train_step(text.net, fwd_text, torch.optim.AdamW(text.net.parameters(), 1e-4), x,
                                          noise, dtype)}
        res = compare(steps, warmup=2, repeats=repeats)
        o, dd, ot = (res[k].median_s for k in ("ours", "diffusers", "ours_text"))
        rows.append([dtype, "class (adaLN-Zero)", f"{num_params(klass.net) + num_params(klass.class_embed):,}",
                     f"{num_params(theirs):,}", 1e3 * o, 1e3 * dd, dd / o, res["diffusers"].min_s / res["ours"].min_s])
        rows.append([dtype, "text (+ cross-attention)", f"{num_params(text.net):,}", "-", 1e3 * ot, "-", "-", "-"])
    c = klass.config.dit
    print_table(f"DiT training step, {preset} (patch {c.patch_size}, width {c.embed_dim}, depth {c.depth}, "
                f"{c.num_heads} heads, {(size // c.patch_size) ** 2} tokens) vs diffusers DiTTransformer2DModel, "
                f"batch {batch}, {device}",
                ["dtype", "conditioning", "ours params", "diffusers params", "ours ms", "diffusers ms",
                 "diffusers/ours", "same, best times"], rows)


def _sampling_pipeline(checkpoint: str | None, preset: str, device: str):
    """The shipped (or given) checkpoint's pipeline; without one, the preset's with random weights."""
    import mmgen
    from mmgen.pipelines import load_pipeline
    from mmgen.pipelines.ddpm import DDPMPipeline
    if checkpoint:
        return load_pipeline(checkpoint, device=device), checkpoint
    torch.manual_seed(0)
    return DDPMPipeline(mmgen.create_model(preset).to(device)), f"{preset} (random weights)"


def sampling_table(checkpoint: str | None, preset: str, prompts: int, steps: int, repeats: int, device: str,
                   guidance: float = 3.0, scheduler: str = "dpm++") -> None:
    from mmgen.models.ddpm import _cat_conditions, make_scheduler
    pipe, name_ = _sampling_pipeline(checkpoint, preset, device)
    m, cfg = pipe.model, pipe.model.config
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(prompts)]
    if cfg.conditioning == "class":
        caps = [i % cfg.num_classes for i in range(prompts)]
    with torch.no_grad():
        cond, uncond = pipe.conditions(caps, guidance)
        both = _cat_conditions(cond, uncond) if uncond is not None else cond
    rows = len(caps) * (2 if uncond is not None else 1)
    sched = make_scheduler(scheduler, num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                           prediction=cfg.prediction, clip_sample=cfg.clip_sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sched.set_timesteps(steps)
    ts = [t.float().to(device).expand(rows) for t in sched.timesteps]
    x = torch.randn(rows, m.latent_chans, m.latent_size, m.latent_size, device=device)

    inside: dict[str, list[float]] = {"sample": [], "call": []}  # denoiser seconds within each call
    clock: list[float] = []

    def pre(*_):
        clock.append(time.perf_counter())

    def post(*_):
        clock.append(time.perf_counter() - clock.pop())

    def timed_inside(name, fn):
        def run():
            clock.clear()
            fn()
            inside[name].append(sum(clock))
        return run

    def forwards():  # the denoiser alone: the same batched conditional + unconditional passes
        with torch.no_grad():
            for t in ts:
                m.net(x, t, **both)

    def sample():
        pipe.sample(caps, steps=steps, guidance=guidance, scheduler=scheduler, seed=0)

    def call():  # the user's call: prompt checks, sampling, CLIP scores (when the pipeline has a CLIP), uint8
        pipe(caps, num_images=1, steps=steps, guidance=guidance, scheduler=scheduler, seed=0)

    hooks = [m.net.register_forward_pre_hook(pre), m.net.register_forward_hook(post)]
    try:
        res = compare({"forwards": forwards, "sample": timed_inside("sample", sample),
                       "call": timed_inside("call", call)}, warmup=1, repeats=repeats)
    finally:
        for h in hooks:
            h.remove()
    f = res["forwards"].median_s
    table = [["denoiser forwards alone", 1e3 * f, 1e3 * f, "-", "-"]]
    for name, what in (("sample", "DDPMPipeline.sample"),
                       ("call", "pipe(...): + prompt checks" + (", CLIP scores" if pipe.clip is not None else ""))):
        total, den = res[name].median_s, statistics.median(inside[name][-repeats:])
        table.append([what, 1e3 * total, 1e3 * den, 100 * (total - den) / den, 100 * (total - f) / f])
    print_table(f"sampling overhead: {name_}, {len(caps)} prompts, {scheduler} x{steps}, guidance {guidance} "
                f"({rows} rows per denoiser call), {device}; overhead = time beyond the denoiser's forwards, "
                f"in % of them (target <= 5)",
                ["what", "ms", "denoiser ms within", "overhead %", "vs forwards alone %"], table)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="unet,dit,sampling", help="comma-separated: unet, dit, sampling")
    p.add_argument("--unet-preset", default="ddpm_unet_shapes")
    p.add_argument("--dit-preset", default="ddpm_dit_emoji")
    p.add_argument("--checkpoint", default="ddpm_shapes", help="the sampling table's model (a shipped name or a directory)")
    p.add_argument("--batch", type=int, default=32, help="training batch (the recipes' 32)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per sampling call")
    p.add_argument("--steps", type=int, default=25, help="sampling steps")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per side (DiT: half, sampling: a third)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny presets, batch 4, one repeat: a smoke run")
    args = p.parse_args(argv or [])
    if args.tiny:
        args.unet_preset, args.dit_preset, args.checkpoint = "ddpm_unet_text_tiny", "ddpm_dit_tiny", None
        args.batch, args.prompts, args.steps, args.repeats = 4, 2, 2, 1
    only = set(args.only.split(","))
    if "unet" in only:
        unet_table(args.unet_preset, args.batch, args.repeats, args.device,
                   modes=MODES[:1] + MODES[-1:] if args.tiny else MODES)
    if "dit" in only:
        dit_table(args.dit_preset, args.batch, max(1, args.repeats // 2), args.device)
    if "sampling" in only:
        sampling_table(args.checkpoint, args.unet_preset, args.prompts, args.steps, max(1, args.repeats // 3),
                       args.device)

if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
