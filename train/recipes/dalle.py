"""DALL-E recipes: a small text-to-image transformer over [text; VQ tokens]. The VQ tokenizer
(and the CLIP reranker used for sample grids) are read from the shipped checkpoints, so train
after checkpoints/vq_shapes exists:

    python -m train --recipe dalle_shapes --out runs/dalle_shapes

The shapes run never sees the six held-out colour-shape pairs (holdout="default"); its
quality is measured on them (see docs/dalle.md)."""
from . import Recipe, register_recipe

register_recipe(Recipe(
    name="dalle_shapes", model="dalle_shapes_32", data="shapes",
    model_overrides={"vq_path": "checkpoints/vq_shapes", "clip_path": "checkpoints/clip_shapes",
                     "cond_drop": 0.15},
    data_kwargs={"holdout": "default"},
    train={"steps": 600, "batch_size": 32, "lr": 1e-3, "min_lr": 1e-4, "warmup": 30, "weight_decay": 0.01,
           "val_split": "val", "eval_every": 0, "eval_batches": 4, "sample_every": 0, "num_samples": 16,
           "log_every": 20, "save_every": 100, "progress": False},
    description="DALL-E (4 x 192, pruned BPE text, 12 + 64 positions) on shapes captions with the default "
                "held-out colour-shape pairs excluded; 1:7 text:image loss, 15% condition dropout",
    expected="see checkpoints/dalle_shapes/README.md for the measured held-out checker accuracy",
))
