"""DALL-E recipes: a small text-to-image transformer over [text; VQ tokens]. The VQ tokenizer
(and the CLIP reranker of the pipeline) are the shipped checkpoints, named as such ("vq_shapes"
resolves from any working directory, also in an installed package), so train after
checkpoints/vq_shapes exists:

    python -m train --recipe dalle_shapes --out runs/dalle_shapes

The shapes run never sees the six held-out colour-shape pairs (holdout="default"); its
quality is measured on them (see docs/dalle.md)."""
from ...data.shapes import COLOUR_NAMES, SHAPES
from . import Recipe, register_recipe

# the training schedule both datasets share; each recipe sets its own step count
_TRAIN = {"batch_size": 32, "lr": 1.5e-3, "min_lr": 1e-4, "warmup": 30, "weight_decay": 0.01,
          "val_split": "val", "eval_every": 0, "eval_batches": 4, "sample_every": 0, "num_samples": 16,
          "log_every": 20, "save_every": 100}
# the 6 x 192 shapes DALL-Es: the stack, and the schedule of the runs from scratch (saved by time)
_BLOCK_6x192 = {"causal": True, "embed_dim": 192, "depth": 6, "num_heads": 6}
_TRAIN_6x192 = {**_TRAIN, "lr": 1e-3, "min_lr": 5e-5, "warmup": 200, "save_every": 0, "save_every_minutes": 3.0,
                "log_every": 50}

register_recipe(Recipe(
    name="dalle_shapes", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "vq_shapes", "clip_path": "clip_shapes",
                     "cond_drop": 0.15},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN, "steps": 1500},
    description="DALL-E (4 x 128, pruned BPE text, 12 + 64 positions) on shapes captions with the default "
                "held-out colour-shape pairs excluded; 1:7 text:image loss, 15% condition dropout",
    expected="held-out colour-shape pairs, all attributes right: 10.5 % (1 sample), 13.5 % (best of 8 by CLIP; "
             "VQ-reconstruction ceiling 69 %); ~25 min on 2 shared CPU cores (checkpoints/dalle_shapes/README.md)",
))

# The first emoji model (4 x 128, 600 steps) overfitted the 2,923 names by step 600 (val loss
# rising) and drew colour blobs. This one is 2.6x wider x deeper and trained 8x longer; against
# the small set, dropout, weight decay and random 2-pixel shifts of the training images (each
# emoji then yields many token grids: with dropout alone its val loss rose from step 1,000).
# Weights kept every 1,000 steps for the curve (docs/dalle.md).
register_recipe(Recipe(
    name="dalle_emoji", model="dalle_emoji_32", data="emoji",
    model_overrides={"vq_path": "vq_emoji", "clip_path": "clip_emoji", "cond_drop": 0.15, "embed_dropout": 0.1,
                     "augment": "crop", "augment_pad": 2,
                     "block": {"causal": True, "embed_dim": 192, "depth": 6, "num_heads": 6, "dropout": 0.1}},
    data_kwargs={"image_size": 32},
    train={**_TRAIN, "steps": 5000, "lr": 1e-3, "min_lr": 5e-5, "warmup": 200, "weight_decay": 0.1, "amp": "bf16",
           "eval_every": 500, "eval_batches": 12, "save_every": 0, "save_every_minutes": 3.0, "keep_every": 1000,
           "log_every": 50},
    description="DALL-E (6 x 192, dropout 0.1, pruned BPE text, 24 + 64 positions) on the 2,923 train emoji at 32 px "
                "with their CLDR names; test emoji (other base emoji) measure generalisation by CLIP score",
    expected="200 test names (unseen emoji), guidance 3, 1 sample / best of 8 by clip_emoji, scored by "
             "clip_emoji_judge: CLIP score 73.5 / 77.8 (real emoji 72.0), caption R@1 32.5 / 41.0 % (real 46.5 %); "
             "2,267 s on one thread (docs/dalle.md)",
))

# On the 16x16 tokenizer (vq_shapes_16x16: 99 % of held-out scenes survive its round trip):
# 256 image positions, 4x the sequence of dalle_shapes, so 4x the work per step. Its sampling
# defaults were chosen on validation prompts (docs/dalle.md): guidance 3 makes three images in
# four hold an extra object; 1.25 with top-k 4 almost none.
register_recipe(Recipe(
    name="dalle_shapes_16x16", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "vq_shapes_16x16", "clip_path": "clip_shapes_reranker", "cond_drop": 0.15,
                     "image_grid": [16, 16], "guidance_scale": 1.25, "top_k": 4},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN, "steps": 5000, "amp": "bf16", "save_every": 0, "save_every_minutes": 3.0, "log_every": 50},
    description="DALL-E (4 x 128, pruned BPE text, 12 + 256 positions) on the 16x16 shapes tokenizer, the default "
                "held-out colour-shape pairs excluded; 1:7 text:image loss, 15% condition dropout; samples with "
                "guidance 1.25, top-k 4",
    expected="strict shapes checker, 200 test prompts per group, guidance 1.25, top-k 4, 1 sample / best of 8 by "
             "CLIP: one object 74.0 / 86.5 %, two objects 4.0 / 21.0 %, a held-out pair 0.5 / 2.0 %; 29 quiet "
             "minutes on 2 CPU cores (docs/dalle.md)",
))

# The two-hour version, shipped as checkpoints/dalle_shapes before the two-stage model: dalle_shapes_16x16's 4 x 128 model
# stopped gaining on two-object scenes (0.5 -> 5.5 % in 23 minutes), so this one is 3x the
# parameters (6 x 192) and 1.2x the steps, at a lower peak rate for the deeper stack; it learns
# the relation (79 % at 1 sample, against 43 %). Weights of every 1,000th step are kept for the curve.
register_recipe(Recipe(
    name="dalle_shapes_2h", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "vq_shapes_16x16", "clip_path": "clip_shapes_reranker", "cond_drop": 0.15,
                     "image_grid": [16, 16], "guidance_scale": 1.25,
                     "block": _BLOCK_6x192},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN_6x192, "steps": 6000, "amp": "bf16", "keep_every": 1000},
    description="DALL-E (6 x 192, pruned BPE text, 12 + 256 positions) on the 16x16 shapes tokenizer, the default "
                "held-out colour-shape pairs excluded; 1:7 text:image loss, 15% condition dropout; samples with "
                "guidance 1.25 (chosen on val)",
    expected="strict shapes checker, 200 test prompts per group, guidance 1.25, 1 sample / best of 8 by "
             "clip_shapes_coca: one object 89.5 / 95.5 %, two objects 53.0 / 78.5 %, a held-out pair 13.5 / 27.0 %; "
             "97 wall minutes (about 90 quiet) on 2 CPU cores (docs/dalle.md)",
))

# The factorised tokenizer (checkpoints/palette_shapes: each 2x2-pixel token is a silhouette
# code x a colour code, embedded and predicted one code at a time): the same 6 x 192 model as
# dalle_shapes_2h, sized to 90 minutes of this 2-core machine in fp32 (0.63 steps/s). A circle's
# outline is then the same codes in every colour, the bet for colour-shape pairs never seen.
# Alone, held-out pairs drew no better, because the colour codes of the background come before
# the outline in raster order, and a red region never held a circle in training. Its weights
# kept at step 1,500 (40 wall minutes) are the shipped dalle_shapes: the colour stage of
# two-stage sampling, painting the outlines dalle_shapes_layout draws.
register_recipe(Recipe(
    name="dalle_shapes_factored", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "palette_shapes", "clip_path": "clip_shapes_coca", "cond_drop": 0.15,
                     "image_grid": [16, 16], "image_vocab": 384, "image_factors": [64, 6], "guidance_scale": 1.25,
                     "block": _BLOCK_6x192},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN_6x192, "steps": 3300, "amp": "fp32", "keep_every": 500},
    description="DALL-E (6 x 192, pruned BPE text, 12 + 256 positions) on the factorised palette tokenizer "
                "(64 silhouettes x 6 colours per 2x2-pixel token, one embedding table and one output head per "
                "code), the default held-out colour-shape pairs excluded; 1:7 text:image loss, 15% condition "
                "dropout; samples with guidance 1.25",
    expected="strict shapes checker, 200 test prompts per group, guidance 1.25, top-k 4, 1 sample / best of 8 by "
             "the four shipped shapes CLIPs: one object 88.5 / 96.0 %, two objects 44.0 / 85.0 %, a held-out pair "
             "9.5 / 22.5 % (held-out shape 10.5 %: no better than the VQ); 5,626 s (about 79 quiet minutes) on 2 CPU "
             "cores (docs/dalle.md)",
))

# The layout half of the shipped two-stage DALL-E: the same 6 x 192 model draws only the silhouette code of
# each palette token (palette_shapes_silhouette: 64 ids) from the caption with its colour words
# removed, so a colour-shape pair never seen in training asks it for nothing new. The colour
# codes are then drawn by dalle_shapes_factored given these silhouettes (layout_path).
register_recipe(Recipe(
    name="dalle_shapes_layout", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "palette_shapes_silhouette", "clip_path": "", "cond_drop": 0.15,
                     "image_grid": [16, 16], "image_vocab": 64, "ignore_words": list(COLOUR_NAMES),
                     "guidance_scale": 1.25,
                     "block": _BLOCK_6x192},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN_6x192, "steps": 2600, "amp": "fp32", "keep_every": 400},
    description="the layout half of a two-stage DALL-E (6 x 192, 12 + 256 positions): the palette tokenizer's "
                "silhouette codes only (64 ids), from captions without their colour words; the default held-out "
                "colour-shape pairs excluded",
    expected="with the colour stage dalle_shapes (dalle_shapes_factored's step 1,500), strict shapes checker, 200 test "
             "prompts per group, one colour per object, 1 sample / best of 8 by the four shapes CLIPs: one object "
             "95.0 / 98.0 %, two objects 33.5 / 80.5 %, a held-out pair 37.5 / 72.5 %; 4,238 s (71 wall minutes) on 2 "
             "CPU cores (docs/dalle.md)",
))

# dalle_shapes_2h (the weights shipped before the two-stage model) continued for 550 steps (19.5 minutes in fp32; 116.5 for
# the lineage) with attribute dropout: half the captions lose colour and shape words at a
# random rate, so the model also draws "a red <unk>" and "a <unk> circle", the experts that
# compositional sampling multiplies for a colour-shape pair never seen together. Not shipped:
# the experts learn that circles are never red, so their product does not draw held-out pairs.
register_recipe(Recipe(
    name="dalle_shapes_compose", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "vq_shapes_16x16", "clip_path": "clip_shapes_coca", "cond_drop": 0.15,
                     "image_grid": [16, 16], "guidance_scale": 1.25, "attr_drop": 0.5,
                     "attr_words": [*COLOUR_NAMES, *SHAPES],
                     "block": _BLOCK_6x192},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN_6x192, "init_from": "runs/dalle_shapes_2h", "steps": 550, "lr": 3e-4, "min_lr": 3e-5,
           "warmup": 50, "amp": "fp32", "keep_every": 110},
    description="dalle_shapes_2h continued with attribute dropout (half the captions lose colour / "
                "shape words at a random rate), for compositional sampling; the default held-out colour-shape "
                "pairs excluded",
    expected="val prompts, 1 sample, all correct: compose 0 / 0.5 / 1: one object 76 / 79 / 75 %, two objects "
             "57 / 46 / 40 %, a held-out pair 7 / 7 / 8 % (the model it continues: 84, 60, 8 %); 1,170 s on 2 CPU cores "
             "(docs/dalle.md)",
))

# dalle_shapes_2h continued for 1,650 steps (22.5 minutes; 119.5 for the lineage) with one
# relation word per axis ("A below B" read as "B above A"), from that run's weights
# (train.init_from). Not shipped: on validation prompts it ties with dalle_shapes_2h, whose
# relation errors are never the order on the right axis (docs/dalle.md).
register_recipe(Recipe(
    name="dalle_shapes_canonical", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "vq_shapes_16x16", "clip_path": "clip_shapes_coca", "cond_drop": 0.15,
                     "image_grid": [16, 16], "guidance_scale": 1.25, "canonical_relations": True,
                     "block": _BLOCK_6x192},
    data_kwargs={"holdout": "default"},
    train={**_TRAIN_6x192, "init_from": "runs/dalle_shapes_2h", "steps": 1650, "lr": 3e-4, "min_lr": 3e-5,
           "warmup": 100, "amp": "bf16", "keep_every": 400},
    description="dalle_shapes_2h continued with each relation caption read in its canonical form (above / "
                "left of: the object named first is drawn first); the default held-out colour-shape pairs "
                "excluded",
    expected="val prompts, all correct, 1 sample / best of 8: one object 85 / 96 %, two objects 64 / 80 % (the "
             "model it continues: 84 / 97 %, 60 / 80 %); 1,353 s on 2 CPU cores (docs/dalle.md)",
))
