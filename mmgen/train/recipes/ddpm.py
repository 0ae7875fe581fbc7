"""DDPM recipes: text-conditional shapes and emoji (the shipped checkpoints), class-conditional
animal-mnist."""
from . import Recipe, register_recipe

# The first shapes model: a 1.45M-parameter text-conditional UNet whose text encoder is the
# frozen text tower of the trained shapes CLIP (copied into the DDPM checkpoint), 37 minutes
# on one thread. The shipped checkpoints/ddpm_shapes is ddpm_shapes_coca continued by
# ddpm_shapes_canonical.
# bf16 autocast: 1.2-1.4x faster on this CPU (AMX); the weights and optimizer stay float32.
_SHAPES_TRAIN = dict(steps=3000, batch_size=32, lr=1e-3, warmup=50, min_lr=1e-4, weight_decay=0.0, ema=0.999,
                     amp="bf16", eval_batches=4, num_samples=16, log_every=20, save_every=250)
register_recipe(Recipe(
    name="ddpm_shapes",
    model="ddpm_unet_shapes",
    data="shapes",
    train=_SHAPES_TRAIN,
    model_overrides={"text_encoder": "clip", "text_encoder_path": "clip_shapes"},
    description="text-conditional pixel UNet on shapes (32x32), frozen CLIP text tower "
                "(model.text_encoder_path: a trained CLIP checkpoint), CFG dropout 10%",
    expected="3,000 steps, 37 min on one thread of a 2-core CPU: 200 test captions, DPM-Solver++ 25 steps, "
             "guidance 3: FD_ours 10.0, CLIP score 62.8, colour match 0.570, whole-scene fidelity 0.045 "
             "(guidance 1: 14.2 / 43.5 / 0.390 / 0.025); see checkpoints/ddpm_shapes/README.md",
))
register_recipe(Recipe(
    name="ddpm_shapes_builtin",
    model="ddpm_unet_shapes",
    data="shapes",
    train=_SHAPES_TRAIN,
    description="ddpm_shapes with the built-in byte-level text encoder trained jointly (self-contained)",
    expected="with --set train.steps=300 (23 min, shared CPU) the text is not used yet (the loss is the same "
             "with true, empty and shuffled captions); guidance 3: FD_ours 44.8, CLIP score 18.4, fidelity 0.000",
))

# The shipped model: the same UNet for 89 minutes on 2 threads, reading the per-token states
# of the shapes reranker CLIP's text tower through cross-attention, the tower fine-tuned with
# it (the built-in byte encoder had barely started to use the caption after 900-1,500 steps).
# It still does not read the relation: no encoder tried keeps "above" and "below" apart.
_TUNED_CLIP_TEXT = {"text_encoder": "clip", "text_encoder_path": "clip_shapes_reranker", "train_text_encoder": True,
                    "clip_path": "clip_shapes_reranker"}  # the untouched CLIP reranks candidates
register_recipe(Recipe(
    name="ddpm_shapes_2h",
    model="ddpm_unet_shapes",
    data="shapes",
    train={**_SHAPES_TRAIN, "steps": 12000, "warmup": 200, "save_every": 1000, "keep_every": 2000},
    model_overrides=_TUNED_CLIP_TEXT,
    description="checkpoints/ddpm_shapes before ddpm_shapes_coca: ddpm_shapes for up to 2 hours on a 2-core CPU, "
                "the text tower of clip_shapes_reranker fine-tuned jointly (per-token cross-attention at 8x8)",
    expected="89 min on 2 threads; strict checker, 200 test prompts, DPM-Solver++ 25 "
             "steps, guidance 1.25: one object 48.5 % all correct (colour 96 %, shape 93.5 %, 43.5 % with an extra "
             "copy), two objects 2.5 % (relation 34 %); see docs/ddpm.md",
))

# The CoCa reranker's text tower separates "above" from "below" (cosine 0.77 between a caption
# and its reversal; the towers before were at 0.9998), so it is read frozen: the denoiser
# cross-attends over its per-token states and nothing can wash the relation out of them.
_COCA_TEXT = {"text_encoder": "clip", "text_encoder_path": "clip_shapes_coca", "clip_path": "clip_shapes_coca"}
# the runs that continue ddpm_shapes_coca from its weights (train.init_from)
_FROM_COCA = {**_SHAPES_TRAIN, "init_from": "runs/ddpm_shapes_coca", "lr": 5e-4, "min_lr": 5e-5, "warmup": 200,
              "save_every": 1000}
register_recipe(Recipe(
    name="ddpm_shapes_coca",
    model="ddpm_unet_shapes",
    data="shapes",
    train={**_SHAPES_TRAIN, "steps": 24000, "warmup": 200, "save_every": 1000, "keep_every": 4000},
    model_overrides=_COCA_TEXT,
    description="the first part of the shipped checkpoints/ddpm_shapes: ddpm_shapes_2h's UNet reading the frozen "
                "per-token text states of clip_shapes_coca, the CLIP whose captioning loss taught its text tower the "
                "relation; the same CLIP reranks candidates",
    expected="83 min on 2 threads; strict checker, 200 test prompts, DPM-Solver++ 25 steps, guidance 2: "
             "one object 98 % all correct, two objects 49.5 % (relation 58 %) from one sample, 92.5 % best of 8 "
             "by the CLIP; see docs/ddpm.md",
))

# ddpm_shapes_coca reads the relation only faintly: reversing it raises the denoising loss by
# under 1 %, and one sample in two puts the objects the wrong way round. Where the layout is
# decided (the first sampling steps, signal-to-noise near 0) an eps prediction carries the
# image only in a correction of about 0.3 % of its input, below bf16's resolution, so the loss
# barely teaches the layout there. This run continues it (same weights, the rest of the 2-hour
# budget) as v-prediction, whose target at high noise is the image itself (Salimans & Ho, 2022).
register_recipe(Recipe(
    name="ddpm_shapes_v",
    model="ddpm_unet_shapes",
    data="shapes",
    train={**_FROM_COCA, "steps": 8500, "keep_every": 1500},
    model_overrides={**_COCA_TEXT, "prediction": "v"},
    description="ddpm_shapes_coca continued (train.init_from) as v-prediction for the rest of the 2-hour budget",
    expected="stopped at 4,570 steps (22 min): at 3,000 steps two objects 37 % all correct, relation 48 % (val, "
             "guidance 2; the start: 42 %); the denoiser reads the caption at high noise but not the relation; "
             "see docs/ddpm.md",
))

# v-prediction alone made the denoiser use the caption at high noise (its implied image there
# is a layout, not clipped noise) but not the relation: reversing it changed that image's error
# by 0.3 %. The attention blocks had no positions (self-attention over the 8x8 tokens is
# blind to what lies above what); 2-D rotary positions give it them, with no new weights.
register_recipe(Recipe(
    name="ddpm_shapes_rope",
    model="ddpm_unet_shapes",
    data="shapes",
    train={**_FROM_COCA, "steps": 8500, "keep_every": 1500},
    model_overrides={**_COCA_TEXT, "prediction": "v", "unet.attn_rope": True},
    description="ddpm_shapes_coca continued (train.init_from) as v-prediction with 2-D rotary positions in "
                "the UNet's self-attention, for the rest of the 2-hour budget",
    expected="stopped at 3,518 steps (17 min): which object goes on top or left still a coin flip at 3,000 steps "
             "(39 right, 35 wrong of 74 val scenes with the right axis); see docs/ddpm.md",
))

# Neither change moved the relation, and the samples say why: the relation's axis is right in
# 96 % of two-object scenes, but which object goes on top (or left) is a coin flip. Reading
# "A below B" as "B above A" leaves one word per axis, so the first object named is always the
# upper or the left one: the denoiser no longer has to combine the word with the order.
register_recipe(Recipe(
    name="ddpm_shapes_canonical",
    model="ddpm_unet_shapes",
    data="shapes",
    train={**_FROM_COCA, "steps": 7000, "keep_every": 1750},
    model_overrides={**_COCA_TEXT, "prediction": "v", "canonical_relations": True},
    description="the shipped checkpoints/ddpm_shapes: ddpm_shapes_coca continued (train.init_from) as "
                "v-prediction, reading each relation caption in its canonical form (above / left of)",
    expected="30 min on 2 threads (113 with ddpm_shapes_coca); strict checker, 200 test prompts, DPM-Solver++ 25 "
             "steps, guidance 2: one object 99.5 % all correct, two objects 89 % (relation 98 %) from one sample; "
             "see docs/ddpm.md",
))

register_recipe(Recipe(
    name="ddpm_shapes_latent",
    model="ddpm_unet_shapes_latent",
    data="shapes",
    train={**_SHAPES_TRAIN, "steps": 4000, "warmup": 200, "save_every": 1000, "keep_every": 1000},
    model_overrides={**_COCA_TEXT, "vae_path": "runs/vae_shapes"},
    description="ddpm_shapes_coca's conditioning (frozen CoCa text tower) on the (4, 8, 8) latents of the vae_shapes "
                "recipe's VAE (train that first, or point model.vae_path at it); as many steps as the pixel run's "
                "first kept checkpoint, to compare fidelity per CPU-minute",
    expected="16 min on 2 threads: coloured blobs, 0 % all correct on 200 test prompts per group (the pixel run "
             "after 14 min: 41 % single objects); see docs/ddpm.md",
))

# The latent run under the pixel model's budget: 2x2-pixel VAE latents (vae_shapes_f2 keeps the
# shapes the 4x4-pixel ones lost), the pixel UNet without its 32x32 level, and the shipped
# pixel model's final recipe from the first step (v-prediction, canonical relations).
register_recipe(Recipe(
    name="ddpm_shapes_latent_f2",
    model="ddpm_unet_shapes_latent_f2",
    data="shapes",
    train={**_SHAPES_TRAIN, "steps": 20000, "warmup": 200, "save_every": 1000, "keep_every": 4000},
    # posterior means (their std is 0.32, hence the scale 3), not samples: the VAE's posterior noise is 3x that
    model_overrides={**_COCA_TEXT, "vae_path": "runs/vae_shapes_f2", "latent_scale": 3.0, "latent_sample": False,
                     "prediction": "v", "canonical_relations": True},
    description="the shipped pixel model's conditioning and objective on the (4, 16, 16) latents of the vae_shapes_f2 "
                "recipe's VAE (train that first, or point model.vae_path at it), to compare fidelity per CPU-minute "
                "with pixel space",
    expected="56 min on 2 threads (5.95 steps/s); strict checker, 200 test prompts, DPM-Solver++ 25 steps, guidance 2: "
             "one object 89 % all correct (shape 91.5 %), two objects 77.5 %, clean background 100 %; "
             "ddpm_shapes_coca at 56 min: 90 / 47 %; see docs/ddpm.md",
))

_ANIMAL_TRAIN = dict(steps=4000, batch_size=64, lr=5e-4, warmup=100, min_lr=5e-5, weight_decay=0.0, ema=0.999,
                     amp="bf16", num_samples=20, save_every=250, keep_every=1000)
register_recipe(Recipe(
    name="ddpm_animal_mnist",
    model="ddpm_unet_animal_mnist",
    data="animal_mnist",
    train=_ANIMAL_TRAIN,
    description="class-conditional pixel UNet on animal-mnist (28x28 grey), CFG dropout 10%",
    expected="38.5 min on one thread at 1.73 steps/s: 200 samples (20 per class), DPM-Solver++ 25 steps, guidance "
             "1 / 3: vit_conv_animal_mnist reads 38.5 / 53 % as the asked class (real 99 %), FD_ours 16.4 / 13.3 on "
             "its features; continued by ddpm_animal_mnist_more (docs/ddpm.md)",
))

# ddpm_animal_mnist's samples were still getting more recognisable at its last step (a
# classifier read 30 % / 53 % of them as the asked class at steps 2,000 / 4,000, guidance 3), so
# it is continued from its weights for 4,000 more steps at a lower rate.
register_recipe(Recipe(
    name="ddpm_animal_mnist_more",
    model="ddpm_unet_animal_mnist",
    data="animal_mnist",
    train={**_ANIMAL_TRAIN, "lr": 2e-4, "min_lr": 2e-5, "init_from": "runs/ddpm_animal_mnist"},
    description="ddpm_animal_mnist continued from its weights for 4,000 more steps, lr 2e-4 cosine to 2e-5",
    expected="23.6 min on 2 threads (62 min with the run it continues): guidance 1 / 3: class agreement 46 / 74.5 % "
             "(real 99 %), FD_ours 9.5 / 6.3 (real 1.2), CLIP score 44.5 / 56.6 (real 60.2); docs/ddpm.md",
))

# ddpm_animal_mnist_more was still gaining 4-6.5 points of class agreement per 1,000 steps at
# its end with 58 minutes of the two-hour budget unspent, so the lineage gets a third part of
# 8,000 steps at a lower peak rate than the second part's (class agreement 74.5 -> 90 %).
register_recipe(Recipe(
    name="ddpm_animal_mnist_final",
    model="ddpm_unet_animal_mnist",
    data="animal_mnist",
    model_overrides={"scheduler": "dpm++", "sample_steps": 25},  # the sampler it is measured with
    train={**_ANIMAL_TRAIN, "steps": 8000, "lr": 1.5e-4, "min_lr": 1.5e-5, "save_every": 0, "save_every_minutes": 3.0,
           "init_from": "runs/ddpm_animal_mnist_more"},
    description="ddpm_animal_mnist_more continued from its weights for 8,000 more steps, lr 1.5e-4 cosine to 1.5e-5; "
                "shipped as checkpoints/ddpm_animal_mnist",
    expected="56.9 min on 2 threads (119 min with the runs it continues): guidance 1 / 3: class agreement 62 / 90 % "
             "(real 99 %), FD_ours 7.2 / 1.9 (real 1.2), CLIP score 50.1 / 61.8 (real 60.2); docs/ddpm.md",
))

# Emoji: the shapes UNet at twice the width (5.7M parameters) reading the frozen per-token
# states of checkpoints/clip_emoji's text tower. The DiT before it (ddpm_emoji_dit) managed
# 0.5 steps/s on one thread; this UNet 1.4, so the same two hours buy 3x the steps.
register_recipe(Recipe(
    name="ddpm_emoji",
    model="ddpm_unet_emoji",
    data="emoji",
    data_kwargs={"image_size": 32},
    train=dict(steps=8000, batch_size=32, lr=5e-4, warmup=200, min_lr=5e-5, weight_decay=0.0, ema=0.999,
               amp="bf16", num_samples=16, log_every=50, save_every=0, save_every_minutes=3.0, keep_every=1000),
    model_overrides={"text_encoder": "clip", "text_encoder_path": "clip_emoji", "clip_path": "clip_emoji",
                     "scheduler": "dpm++", "sample_steps": 25},
    description="text-conditional pixel UNet on emoji names (32 px), frozen per-token text states of "
                "checkpoints/clip_emoji, v-prediction, min-SNR; the same CLIP reranks candidates",
    expected="96 min on one thread: 200 unseen test names, DPM-Solver++ 25 steps, guidance 1 / 3, scored by "
             "clip_emoji_judge: caption R@1 35.0 / 42.5 % (real emoji 42.5 %), CLIP score 76.9 / 78.6 (real 71.4), "
             "FD_ours 3.8 / 6.8; see docs/ddpm.md",
))

register_recipe(Recipe(
    name="ddpm_emoji_dit",
    model="ddpm_dit_emoji",
    data="emoji",
    data_kwargs={"image_size": 32},
    train=dict(steps=3000, batch_size=32, lr=5e-4, warmup=100, min_lr=5e-5, weight_decay=0.0, ema=0.999,
               amp="bf16", num_samples=16, save_every=250),
    model_overrides={"text_encoder": "clip", "text_encoder_path": "clip_emoji"},
    description="the emoji DDPM before ddpm_emoji: text-conditional DiT (adaLN-Zero + cross-attention) on emoji "
                "names (32 px), frozen text tower of checkpoints/clip_emoji, v-prediction, min-SNR",
    expected="3,000 steps, 101 min on one thread of a 2-core CPU, scored by the first clip_emoji (which had seen "
             "the test emoji): guidance 1 / 3: FD_ours 3.2 / 3.8, CLIP score 71.2 / 87.3 (real images: 1.8 / 96.8); "
             "layout and colours right, ragged edges; see docs/ddpm.md",
))
